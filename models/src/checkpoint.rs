//! Model weights on disk: full-precision named MessagePack records, so that a resumed run
//! continues from exactly the weights it saved.

use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::record::{FullPrecisionSettings, NamedMpkFileRecorder, RecorderError};
use burn::tensor::backend::Backend;

use crate::{Gpt, GptConfig};

/// The recorder the lab uses for weights and optimizer state. Half precision would make
/// resumed runs drift from uninterrupted ones.
pub type LabRecorder = NamedMpkFileRecorder<FullPrecisionSettings>;

/// The file a record with this stem is written to (burn replaces the extension).
pub fn record_path(stem: &Path) -> PathBuf {
    stem.with_extension("mpk")
}

/// Writes the model's weights to `<stem>.mpk`.
pub fn save_model<B: Backend>(model: &Gpt<B>, stem: &Path) -> Result<(), RecorderError> {
    model.clone().save_file(stem.to_path_buf(), &LabRecorder::new())
}

/// Builds a model of shape `config` and loads the weights from `<stem>.mpk`.
pub fn load_model<B: Backend>(config: &GptConfig, stem: &Path, device: &B::Device) -> Result<Gpt<B>, RecorderError> {
    config.build::<B>(device).load_file(stem.to_path_buf(), &LabRecorder::new(), device)
}

#[cfg(test)]
mod tests {
    use burn::backend::Flex;
    use burn::backend::flex::FlexDevice;
    use burn::tensor::{Int, Tensor, TensorData};

    use super::*;

    #[test]
    fn weights_round_trip_exactly() {
        let config = GptConfig::tiny(11, 8);
        let model: Gpt<Flex> = config.init_seeded(3, &FlexDevice);
        let dir = std::env::temp_dir().join(format!("lab-ckpt-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let stem = dir.join("step_000001");
        save_model(&model, &stem).unwrap();
        assert!(record_path(&stem).is_file());
        let back: Gpt<Flex> = load_model(&config, &stem, &FlexDevice).unwrap();
        let x = Tensor::<Flex, 2, Int>::from_data(TensorData::new(vec![1, 2, 3, 4], [1, 4]), &FlexDevice);
        let a = model.forward(x.clone()).logits.into_data().to_vec::<f32>().unwrap();
        let b = back.forward(x).logits.into_data().to_vec::<f32>().unwrap();
        assert_eq!(a, b);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
