//! Export of a [`Gpt`] to a safetensors file under nanoGPT's state-dict names, for tools outside
//! the lab: `safetensors.torch.load_file` opens it, and nanoGPT's `GPT` (`bias=True`, its MLP
//! width `4 n_embd` equal to `d_ff`) takes it with `load_state_dict`. The lab's own checkpoints stay
//! burn records ([`crate::checkpoint`]); this is a one-way export.
//!
//! # Names and layouts
//!
//! With `v` = vocabulary, `T` = max_seq_len, `d` = d_model, `f` = d_ff, all tensors F32,
//! little-endian, in PyTorch's layouts:
//!
//! | name | shape | from the lab's |
//! | --- | --- | --- |
//! | `transformer.wte.weight` | `[v, d]` | `tok_emb.weight` (same layout) |
//! | `transformer.wpe.weight` | `[T, d]` | `pos_emb.weight` (same layout) |
//! | `transformer.h.{i}.ln_1.weight`, `.bias` | `[d]` | `blocks.{i}.ln_1.gamma`, `.beta` |
//! | `transformer.h.{i}.attn.c_attn.weight` | `[3d, d]` | `blocks.{i}.attn.{q,k,v}.weight`, each `[d, d]` transposed, stacked q, k, v |
//! | `transformer.h.{i}.attn.c_attn.bias` | `[3d]` | `blocks.{i}.attn.{q,k,v}.bias` concatenated |
//! | `transformer.h.{i}.attn.c_proj.weight`, `.bias` | `[d, d]`, `[d]` | `blocks.{i}.attn.proj` (weight transposed) |
//! | `transformer.h.{i}.ln_2.weight`, `.bias` | `[d]` | `blocks.{i}.ln_2.gamma`, `.beta` |
//! | `transformer.h.{i}.mlp.c_fc.weight`, `.bias` | `[f, d]`, `[f]` | `blocks.{i}.mlp.fc` (weight transposed) |
//! | `transformer.h.{i}.mlp.c_proj.weight`, `.bias` | `[d, f]`, `[d]` | `blocks.{i}.mlp.proj` (weight transposed) |
//! | `transformer.ln_f.weight`, `.bias` | `[d]` | `ln_f.gamma`, `.beta` |
//! | `lm_head.weight` | `[v, d]` | `lm_head.weight` transposed, or a copy of `tok_emb.weight` when tied |
//!
//! burn's `Linear` keeps its weight as `[in, out]` and computes `x W + b`; PyTorch's keeps
//! `[out, in]` and computes `x Wᵀ + b`, hence the transposes. nanoGPT computes q, k and v with one
//! `c_attn` Linear and splits its output `[.., 3d]` into q, k, v in that order
//! (`.split(n_embd, dim=2)`), so `c_attn`'s output rows are q's d outputs, then k's, then v's.
//! Within each, both sides lay the heads side by side (head `h` is columns `h k..(h + 1) k`, the
//! lab's `kernels::causal_attention`, nanoGPT's `.view(B, T, n_head, hs)`), so no reordering inside
//! q, k or v is needed.
//!
//! Tied embeddings: safetensors has no aliasing (one name, one byte range; `save_file` in
//! Python refuses shared tensors), and `load_state_dict` of a nanoGPT `GPT` expects both
//! `transformer.wte.weight` and `lm_head.weight` as keys, so the export writes `lm_head.weight`
//! as a copy of the token embedding, equal to it bit for bit. An untied lab model writes its own
//! head there; nanoGPT always ties the two, so loading that one needs a `GPT` with the tie
//! removed (otherwise the later key overwrites the shared tensor). LayerNorm `.bias` and Linear
//! `.bias` tensors are written when the lab model has them (it always does today; nanoGPT with
//! `bias=False` has none). nanoGPT registers an `attn.bias` causal-mask buffer only without
//! flash attention (PyTorch < 2.0); such a model needs `strict=False`.
//!
//! The header's `__metadata__` holds, as strings: `format` = `pt` (what Hugging Face loaders
//! look for), `layout` = `nanogpt`, the [`GptConfig`] fields `vocab_size`, `max_seq_len`,
//! `n_layers`, `d_model`, `n_heads`, `d_ff`, `tie_embeddings`, `layer_norm_eps`, `bias`, and
//! `lab_config`, the whole config as JSON (what `GptConfig` loads).
//!
//! # Why the `safetensors` crate and not burn-store
//!
//! burn-store 0.21's `SafetensorsStore` writes one tensor per module parameter, renamed by
//! regex (`with_key_remapping`) and reshaped one at a time by a `ModuleAdapter`
//! (`BurnToPyTorchAdapter` transposes Linear weights, renames gamma/beta): it has no way to pack
//! three parameters (q, k, v) into one tensor, nor to write a tensor the module does not have
//! (`lm_head.weight` of a tied model), and its `collect_from` writes straight to the final path
//! (not atomically). Its lower-level writer is private. So this module reads the parameters with
//! burn's own `ModuleVisitor` and writes them with the `safetensors` crate, the one burn-store
//! itself uses (0.7), which adds only that crate to a build, about 6 s of compiling on the lab's
//! two cores (its dependencies, serde, serde_json and hashbrown, are built for burn already).
//! burn-store with only its `std` and `safetensors` features would add about 10 s more (itself
//! 7.5 s, textdistance, memmap2, byteorder); its default features bring zip, tar and ciborium too.
//!
//! The `Gpt` does not expose its head count (a plain field, not a parameter), so
//! [`export_safetensors`] takes the [`GptConfig`] the model was built from, checks it against
//! every shape the parameters show, and records it.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use safetensors::{Dtype, View};

use crate::{Gpt, GptConfig};

/// Tensors by name, each with its shape and its values in row-major order.
pub type StateDict = Vec<(String, Vec<usize>, Vec<f32>)>;

/// Why an export failed.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The config given is not the one the model was built from.
    #[error("the model does not match its config: {0}")]
    ConfigMismatch(String),
    /// The model's parameters are not the ones this export maps (a parameter missing, of an
    /// unexpected shape, or one it does not know): the GPT changed and this module did not.
    #[error("the model's parameters do not map onto nanoGPT's: {0}")]
    Layout(String),
    /// A parameter's values could not be read as f32.
    #[error("reading parameter `{name}`: {message}")]
    Data { name: String, message: String },
    /// The safetensors writer failed (I/O errors while writing the temporary file included).
    #[error("writing safetensors: {0}")]
    Safetensors(#[from] safetensors::SafeTensorError),
    /// Flushing or renaming the file failed.
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

/// The model's weights as a nanoGPT `GPT.state_dict()` holds them (see the module
/// documentation), in nanoGPT's order.
pub fn nanogpt_state_dict<B: Backend>(model: &Gpt<B>) -> Result<StateDict, ExportError> {
    convert(model).map(|(dict, _)| dict)
}

/// Writes the model to `path` as a safetensors file with nanoGPT's names and the config in its
/// metadata; `config` must be the one the model was built from (it alone knows the head count).
/// The file appears whole or not at all: it is written under a temporary name beside `path`,
/// flushed to disk, then renamed over `path`.
pub fn export_safetensors<B: Backend>(model: &Gpt<B>, config: &GptConfig, path: &Path) -> Result<(), ExportError> {
    let (dict, shape) = convert(model)?;
    shape.check(config)?;
    let bias = dict.iter().any(|(name, _, _)| name == "transformer.ln_f.bias");
    let metadata: HashMap<String, String> = [
        ("format", "pt".to_string()),
        ("layout", "nanogpt".to_string()),
        ("vocab_size", config.vocab_size.to_string()),
        ("max_seq_len", config.max_seq_len.to_string()),
        ("n_layers", config.n_layers.to_string()),
        ("d_model", config.d_model.to_string()),
        ("n_heads", config.n_heads.to_string()),
        ("d_ff", config.d_ff.to_string()),
        ("tie_embeddings", config.tie_embeddings.to_string()),
        ("layer_norm_eps", config.layer_norm_eps.to_string()),
        ("bias", bias.to_string()),
        ("lab_config", config.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let views = dict.iter().map(|(name, shape, values)| (name.as_str(), F32View { shape, values }));
    write_atomically(path, |tmp| safetensors::serialize_to_file(views, Some(metadata), tmp))
}

/// What the parameters say about the model's shape.
#[derive(Debug, PartialEq)]
struct Shape {
    vocab_size: usize,
    max_seq_len: usize,
    n_layers: usize,
    d_model: usize,
    d_ff: usize,
    tied: bool,
}

impl Shape {
    fn check(&self, config: &GptConfig) -> Result<(), ExportError> {
        config.validate().map_err(ExportError::ConfigMismatch)?;
        let expected = Shape {
            vocab_size: config.vocab_size,
            max_seq_len: config.max_seq_len,
            n_layers: config.n_layers,
            d_model: config.d_model,
            d_ff: config.d_ff,
            tied: config.tie_embeddings,
        };
        if *self != expected {
            return Err(ExportError::ConfigMismatch(format!(
                "the model's parameters say {self:?}, the config {expected:?}"
            )));
        }
        Ok(())
    }
}

/// A parameter as read from the model: shape and row-major values.
struct Lab {
    shape: Vec<usize>,
    values: Vec<f32>,
}

/// Every float parameter of a module by its path (`blocks.0.attn.q.weight`), as f32.
#[derive(Default)]
struct Collect {
    path: Vec<String>,
    params: BTreeMap<String, Lab>,
    error: Option<ExportError>,
}

impl<B: Backend> ModuleVisitor<B> for Collect {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let name = self.path.join(".");
        let tensor = param.val();
        let shape = tensor.dims().to_vec();
        match tensor.into_data().convert::<f32>().into_vec::<f32>() {
            Ok(values) => {
                self.params.insert(name, Lab { shape, values });
            }
            Err(e) => {
                self.error.get_or_insert(ExportError::Data { name, message: format!("{e:?}") });
            }
        }
    }
}

/// The lab's parameters, consumed by name as they are mapped.
struct Params(BTreeMap<String, Lab>);

impl Params {
    /// Removes parameter `name`, which must have shape `shape`.
    fn take(&mut self, name: &str, shape: &[usize]) -> Result<Lab, ExportError> {
        let lab = self.0.remove(name).ok_or_else(|| ExportError::Layout(format!("no parameter `{name}`")))?;
        if lab.shape != shape {
            return Err(ExportError::Layout(format!("`{name}` has shape {:?}, expected {shape:?}", lab.shape)));
        }
        Ok(lab)
    }

    /// Removes parameter `name` if the model has it (an optional bias).
    fn take_optional(&mut self, name: &str, shape: &[usize]) -> Result<Option<Lab>, ExportError> {
        if self.0.contains_key(name) { self.take(name, shape).map(Some) } else { Ok(None) }
    }
}

/// `[rows, cols]` row-major values transposed to `[cols, rows]`.
fn transpose(values: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    debug_assert_eq!(values.len(), rows * cols);
    let mut out = vec![0.0; values.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = values[r * cols + c];
        }
    }
    out
}

/// The state dict and the shape the parameters show.
fn convert<B: Backend>(model: &Gpt<B>) -> Result<(StateDict, Shape), ExportError> {
    if model.position_limit().is_none() {
        return Err(ExportError::Layout(
            "nanoGPT's layout has learned positions (`transformer.wpe`); this model has rotary or no positions".into(),
        ));
    }
    let mut collect = Collect::default();
    model.visit(&mut collect);
    if let Some(e) = collect.error {
        return Err(e);
    }
    let mut p = Params(collect.params);
    let wte = p.0.get("tok_emb.weight").ok_or_else(|| ExportError::Layout("no parameter `tok_emb.weight`".into()))?;
    let [v, d] = <[usize; 2]>::try_from(wte.shape.as_slice())
        .map_err(|_| ExportError::Layout(format!("`tok_emb.weight` has shape {:?}", wte.shape)))?;
    let t = p.0.get("pos_emb.weight").map_or(0, |lab| lab.shape[0]);
    let f = p.0.get("blocks.0.mlp.fc.weight").map_or(0, |lab| lab.shape.get(1).copied().unwrap_or(0));
    let n_layers = (0..).take_while(|i| p.0.contains_key(&format!("blocks.{i}.ln_1.gamma"))).count();
    if t != model.max_seq_len() || d != model.d_model() {
        return Err(ExportError::Layout(format!(
            "embeddings [{t}, {d}] for a model of max_seq_len {} and d_model {}",
            model.max_seq_len(),
            model.d_model()
        )));
    }

    let mut dict = StateDict::new();
    let mut put = |name: String, shape: Vec<usize>, values: Vec<f32>| dict.push((name, shape, values));
    let wte = p.take("tok_emb.weight", &[v, d])?;
    let wte_copy = wte.values.clone();
    put("transformer.wte.weight".into(), vec![v, d], wte.values);
    put("transformer.wpe.weight".into(), vec![t, d], p.take("pos_emb.weight", &[t, d])?.values);

    // A LayerNorm: gamma, beta -> weight, bias.
    let norm = |p: &mut Params, put: &mut dyn FnMut(String, Vec<usize>, Vec<f32>), lab: &str, torch: &str| {
        put(format!("{torch}.weight"), vec![d], p.take(&format!("{lab}.gamma"), &[d])?.values);
        if let Some(beta) = p.take_optional(&format!("{lab}.beta"), &[d])? {
            put(format!("{torch}.bias"), vec![d], beta.values);
        }
        Ok::<_, ExportError>(())
    };
    // A Linear [i, o] -> weight [o, i], bias [o].
    let linear = |p: &mut Params, put: &mut dyn FnMut(String, Vec<usize>, Vec<f32>), lab: &str, torch: &str, i, o| {
        let weight = p.take(&format!("{lab}.weight"), &[i, o])?;
        put(format!("{torch}.weight"), vec![o, i], transpose(&weight.values, i, o));
        if let Some(bias) = p.take_optional(&format!("{lab}.bias"), &[o])? {
            put(format!("{torch}.bias"), vec![o], bias.values);
        }
        Ok::<_, ExportError>(())
    };

    for i in 0..n_layers {
        let (lab, torch) = (format!("blocks.{i}"), format!("transformer.h.{i}"));
        norm(&mut p, &mut put, &format!("{lab}.ln_1"), &format!("{torch}.ln_1"))?;
        // c_attn: q, k, v each [d, d] (in, out) -> [d, d] (out, in), stacked along the output.
        let mut weight = Vec::with_capacity(3 * d * d);
        let mut biases = Vec::with_capacity(3);
        for proj in ["q", "k", "v"] {
            let w = p.take(&format!("{lab}.attn.{proj}.weight"), &[d, d])?;
            weight.extend(transpose(&w.values, d, d));
            biases.push(p.take_optional(&format!("{lab}.attn.{proj}.bias"), &[d])?);
        }
        put(format!("{torch}.attn.c_attn.weight"), vec![3 * d, d], weight);
        match biases.iter().filter(|b| b.is_some()).count() {
            0 => {}
            3 => {
                let bias = biases.into_iter().flatten().flat_map(|b| b.values).collect();
                put(format!("{torch}.attn.c_attn.bias"), vec![3 * d], bias);
            }
            _ => return Err(ExportError::Layout(format!("{lab}.attn: q, k and v disagree on having a bias"))),
        }
        linear(&mut p, &mut put, &format!("{lab}.attn.proj"), &format!("{torch}.attn.c_proj"), d, d)?;
        norm(&mut p, &mut put, &format!("{lab}.ln_2"), &format!("{torch}.ln_2"))?;
        linear(&mut p, &mut put, &format!("{lab}.mlp.fc"), &format!("{torch}.mlp.c_fc"), d, f)?;
        linear(&mut p, &mut put, &format!("{lab}.mlp.proj"), &format!("{torch}.mlp.c_proj"), f, d)?;
    }
    norm(&mut p, &mut put, "ln_f", "transformer.ln_f")?;
    let tied = !p.0.contains_key("lm_head.weight");
    let head = if tied { wte_copy } else { transpose(&p.take("lm_head.weight", &[d, v])?.values, d, v) };
    put("lm_head.weight".into(), vec![v, d], head);

    if !p.0.is_empty() {
        let left: Vec<&str> = p.0.keys().map(String::as_str).collect();
        return Err(ExportError::Layout(format!("parameters with no nanoGPT name: {left:?}")));
    }
    Ok((dict, Shape { vocab_size: v, max_seq_len: t, n_layers, d_model: d, d_ff: f, tied }))
}

/// A tensor of f32 values for the safetensors writer.
struct F32View<'a> {
    shape: &'a [usize],
    values: &'a [f32],
}

impl View for F32View<'_> {
    fn dtype(&self) -> Dtype {
        Dtype::F32
    }

    fn shape(&self) -> &[usize] {
        self.shape
    }

    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Owned(self.values.iter().flat_map(|x| x.to_le_bytes()).collect())
    }

    fn data_len(&self) -> usize {
        size_of_val(self.values)
    }
}

/// Runs `write` on a fresh temporary file beside `path` (tempfile's, as every file the lab
/// writes), flushes the result to disk and renames it to `path`; on failure the temporary file is
/// removed (dropped).
fn write_atomically(
    path: &Path,
    write: impl FnOnce(&Path) -> Result<(), safetensors::SafeTensorError>,
) -> Result<(), ExportError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ExportError::Io { path, source }
    };
    if path.file_name().is_none() {
        return Err(io(path)(std::io::Error::new(std::io::ErrorKind::InvalidInput, "the path has no file name")));
    }
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let mut builder = tempfile::Builder::new();
    // A file as the usual create makes it (0666 less the umask), not tempfile's private 0600.
    #[cfg(unix)]
    builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666));
    let tmp = builder.prefix(".tmp-").tempfile_in(dir).map_err(io(path))?;
    write(tmp.path())?;
    tmp.as_file().sync_all().map_err(io(tmp.path()))?;
    tmp.persist(path).map_err(|e| io(path)(e.error))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use burn::backend::Flex;
    use burn::backend::flex::FlexDevice;
    use burn::tensor::{Int, TensorData};
    use safetensors::SafeTensors;

    use super::*;

    type B = Flex;

    /// A fresh directory for one test.
    fn scratch(test: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("lab-export-{}-{test}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn config(tied: bool) -> GptConfig {
        GptConfig::tiny(17, 12).with_tie_embeddings(tied)
    }

    /// The lab's parameters by module path.
    fn lab_params(model: &Gpt<B>) -> BTreeMap<String, Lab> {
        let mut collect = Collect::default();
        model.visit(&mut collect);
        assert!(collect.error.is_none());
        collect.params
    }

    /// The names nanoGPT's `GPT.state_dict()` has for a model of `layers` blocks (no causal-mask
    /// buffers: PyTorch >= 2 uses flash attention).
    fn nanogpt_names(layers: usize) -> Vec<String> {
        let mut names = vec!["transformer.wte.weight".to_string(), "transformer.wpe.weight".to_string()];
        for i in 0..layers {
            for part in [
                "ln_1.weight",
                "ln_1.bias",
                "attn.c_attn.weight",
                "attn.c_attn.bias",
                "attn.c_proj.weight",
                "attn.c_proj.bias",
                "ln_2.weight",
                "ln_2.bias",
                "mlp.c_fc.weight",
                "mlp.c_fc.bias",
                "mlp.c_proj.weight",
                "mlp.c_proj.bias",
            ] {
                names.push(format!("transformer.h.{i}.{part}"));
            }
        }
        names.extend(["transformer.ln_f.weight", "transformer.ln_f.bias", "lm_head.weight"].map(String::from));
        names
    }

    fn f32s(view: &safetensors::tensor::TensorView<'_>) -> Vec<f32> {
        assert_eq!(view.dtype(), Dtype::F32);
        view.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
    }

    #[test]
    fn export_has_nanogpt_names_shapes_and_the_models_values() {
        for tied in [true, false] {
            let config = config(tied);
            let model: Gpt<B> = config.init_seeded(7, &FlexDevice);
            let dir = scratch(&format!("values-{tied}"));
            let path = dir.join("model.safetensors");
            export_safetensors(&model, &config, &path).unwrap();
            let bytes = std::fs::read(&path).unwrap();
            let file = SafeTensors::deserialize(&bytes).unwrap();

            let mut names: Vec<String> = file.names().into_iter().map(String::from).collect();
            names.sort();
            let mut expected = nanogpt_names(2);
            expected.sort();
            assert_eq!(names, expected);

            let (v, t, d, f) = (17, 12, 64, 256);
            let get = |name: &str, shape: &[usize]| {
                let view = file.tensor(name).unwrap();
                assert_eq!(view.shape(), shape, "{name}");
                f32s(&view)
            };
            let lab = lab_params(&model);
            let param = |name: &str| &lab[name].values;
            // PyTorch's [o, i] weight at (row, col) is burn's [i, o] at (col, row).
            let assert_transposed = |torch: &[f32], burn: &[f32], o: usize, i: usize, what: &str| {
                for r in 0..o {
                    for c in 0..i {
                        assert_eq!(torch[r * i + c], burn[c * o + r], "{what} at ({r}, {c})");
                    }
                }
            };

            assert_eq!(&get("transformer.wte.weight", &[v, d]), param("tok_emb.weight"));
            assert_eq!(&get("transformer.wpe.weight", &[t, d]), param("pos_emb.weight"));
            for i in 0..2 {
                let h = format!("transformer.h.{i}");
                let b = format!("blocks.{i}");
                for (torch, lab) in [("ln_1", "ln_1"), ("ln_2", "ln_2")] {
                    assert_eq!(&get(&format!("{h}.{torch}.weight"), &[d]), param(&format!("{b}.{lab}.gamma")));
                    assert_eq!(&get(&format!("{h}.{torch}.bias"), &[d]), param(&format!("{b}.{lab}.beta")));
                }
                let c_attn = get(&format!("{h}.attn.c_attn.weight"), &[3 * d, d]);
                let c_attn_bias = get(&format!("{h}.attn.c_attn.bias"), &[3 * d]);
                for (k, proj) in ["q", "k", "v"].into_iter().enumerate() {
                    let rows = &c_attn[k * d * d..(k + 1) * d * d];
                    assert_transposed(rows, param(&format!("{b}.attn.{proj}.weight")), d, d, proj);
                    assert_eq!(&c_attn_bias[k * d..(k + 1) * d], param(&format!("{b}.attn.{proj}.bias")).as_slice());
                }
                for (torch, lab, o, i) in
                    [("attn.c_proj", "attn.proj", d, d), ("mlp.c_fc", "mlp.fc", f, d), ("mlp.c_proj", "mlp.proj", d, f)]
                {
                    let w = get(&format!("{h}.{torch}.weight"), &[o, i]);
                    assert_transposed(&w, param(&format!("{b}.{lab}.weight")), o, i, torch);
                    assert_eq!(&get(&format!("{h}.{torch}.bias"), &[o]), param(&format!("{b}.{lab}.bias")));
                }
            }
            assert_eq!(&get("transformer.ln_f.weight", &[d]), param("ln_f.gamma"));
            assert_eq!(&get("transformer.ln_f.bias", &[d]), param("ln_f.beta"));
            let head = get("lm_head.weight", &[v, d]);
            if tied {
                assert_eq!(&head, param("tok_emb.weight"));
            } else {
                assert_transposed(&head, param("lm_head.weight"), v, d, "lm_head");
                assert_ne!(&head, param("tok_emb.weight"));
            }
            std::fs::remove_dir_all(dir).unwrap();
        }
    }

    #[test]
    fn header_metadata_holds_the_config() {
        let config = GptConfig::tiny(17, 12).with_n_heads(4);
        let model: Gpt<B> = config.init_seeded(1, &FlexDevice);
        let dir = scratch("metadata");
        let path = dir.join("model.safetensors");
        export_safetensors(&model, &config, &path).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let (_, header) = SafeTensors::read_metadata(&bytes).unwrap();
        let meta = header.metadata().as_ref().expect("a __metadata__ entry");
        for (key, value) in [
            ("format", "pt"),
            ("layout", "nanogpt"),
            ("vocab_size", "17"),
            ("max_seq_len", "12"),
            ("n_layers", "2"),
            ("d_model", "64"),
            ("n_heads", "4"),
            ("d_ff", "256"),
            ("tie_embeddings", "true"),
            ("layer_norm_eps", "0.00001"),
            ("bias", "true"),
        ] {
            assert_eq!(meta.get(key).map(String::as_str), Some(value), "metadata {key}");
        }
        let back = <GptConfig as burn::config::Config>::load_binary(meta["lab_config"].as_bytes()).unwrap();
        assert_eq!(back, config);
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// nanoGPT's forward pass, written from its `model.py`, over the exported tensors alone: if
    /// the export put anything in the wrong place, its logits differ from the lab's.
    fn nanogpt_forward(file: &SafeTensors<'_>, n_heads: usize, tokens: &[usize]) -> Vec<f32> {
        let get = |name: &str| f32s(&file.tensor(name).unwrap());
        let wte_view = file.tensor("transformer.wte.weight").unwrap();
        let (v, d) = (wte_view.shape()[0], wte_view.shape()[1]);
        let (wte, wpe) = (get("transformer.wte.weight"), get("transformer.wpe.weight"));
        // PyTorch's Linear: y = x W^T + b with W [o, i].
        let linear = |x: &[f32], w: &[f32], b: Option<&[f32]>, o: usize| -> Vec<f32> {
            let i = x.len();
            (0..o).map(|r| (0..i).map(|c| w[r * i + c] * x[c]).sum::<f32>() + b.map_or(0.0, |b| b[r])).collect()
        };
        let layer_norm = |x: &[f32], w: &[f32], b: &[f32]| -> Vec<f32> {
            let n = x.len() as f32;
            let mean = x.iter().sum::<f32>() / n;
            let var = x.iter().map(|a| (a - mean) * (a - mean)).sum::<f32>() / n;
            let inv = 1.0 / (var + 1e-5).sqrt();
            x.iter().enumerate().map(|(j, a)| (a - mean) * inv * w[j] + b[j]).collect()
        };
        // nn.GELU(): x Phi(x), with erf from Abramowitz & Stegun 7.1.26 (error < 1.5e-7), in f64.
        let gelu = |x: f32| -> f32 {
            let z = (x as f64 / std::f64::consts::SQRT_2).abs();
            let t = 1.0 / (1.0 + 0.3275911 * z);
            let poly =
                t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))));
            let erf = (1.0 - poly * (-z * z).exp()).copysign(x as f64);
            (0.5 * x as f64 * (1.0 + erf)) as f32
        };
        let mut xs: Vec<Vec<f32>> = tokens
            .iter()
            .enumerate()
            .map(|(p, &tok)| (0..d).map(|j| wte[tok * d + j] + wpe[p * d + j]).collect())
            .collect();
        let layers = (0..).take_while(|i| file.tensor(&format!("transformer.h.{i}.ln_1.weight")).is_ok()).count();
        let hs = d / n_heads;
        for i in 0..layers {
            let w = |part: &str| get(&format!("transformer.h.{i}.{part}"));
            let qkv: Vec<Vec<f32>> = xs
                .iter()
                .map(|x| {
                    let h = layer_norm(x, &w("ln_1.weight"), &w("ln_1.bias"));
                    linear(&h, &w("attn.c_attn.weight"), Some(&w("attn.c_attn.bias")), 3 * d)
                })
                .collect();
            for (p, x) in xs.iter_mut().enumerate() {
                let mut y = vec![0.0f32; d];
                for head in 0..n_heads {
                    let q = &qkv[p][head * hs..(head + 1) * hs];
                    let scores: Vec<f32> = (0..=p)
                        .map(|s| {
                            let k = &qkv[s][d + head * hs..d + (head + 1) * hs];
                            q.iter().zip(k).map(|(a, b)| a * b).sum::<f32>() / (hs as f32).sqrt()
                        })
                        .collect();
                    let max = scores.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
                    let exps: Vec<f32> = scores.iter().map(|s| (s - max).exp()).collect();
                    let total: f32 = exps.iter().sum();
                    for (s, e) in exps.iter().enumerate() {
                        for j in 0..hs {
                            y[head * hs + j] += e / total * qkv[s][2 * d + head * hs + j];
                        }
                    }
                }
                let out = linear(&y, &w("attn.c_proj.weight"), Some(&w("attn.c_proj.bias")), d);
                x.iter_mut().zip(out).for_each(|(a, b)| *a += b);
                let h = layer_norm(x, &w("ln_2.weight"), &w("ln_2.bias"));
                let f = file.tensor(&format!("transformer.h.{i}.mlp.c_fc.bias")).unwrap().shape()[0];
                let hidden: Vec<f32> =
                    linear(&h, &w("mlp.c_fc.weight"), Some(&w("mlp.c_fc.bias")), f).into_iter().map(gelu).collect();
                let out = linear(&hidden, &w("mlp.c_proj.weight"), Some(&w("mlp.c_proj.bias")), d);
                x.iter_mut().zip(out).for_each(|(a, b)| *a += b);
            }
        }
        let head = get("lm_head.weight");
        xs.iter()
            .flat_map(|x| {
                let h = layer_norm(x, &get("transformer.ln_f.weight"), &get("transformer.ln_f.bias"));
                linear(&h, &head, None, v)
            })
            .collect()
    }

    #[test]
    fn nanogpt_forward_over_the_export_gives_the_labs_logits() {
        let tokens = [3usize, 1, 4, 1, 5, 9, 2, 6, 5, 3];
        for tied in [true, false] {
            // Weights far larger than at initialisation, so that attention is peaked, not
            // uniform, and a swapped q and k, or heads out of place, would show in the logits.
            let config = config(tied).with_init_std(0.5);
            let model: Gpt<B> = config.init_seeded(11, &FlexDevice);
            let dir = scratch(&format!("forward-{tied}"));
            let path = dir.join("model.safetensors");
            export_safetensors(&model, &config, &path).unwrap();
            let bytes = std::fs::read(&path).unwrap();
            let file = SafeTensors::deserialize(&bytes).unwrap();
            let theirs = nanogpt_forward(&file, config.n_heads, &tokens);

            let ids: Vec<i32> = tokens.iter().map(|&t| t as i32).collect();
            let input = Tensor::<B, 2, Int>::from_data(TensorData::new(ids, [1, tokens.len()]), &FlexDevice);
            let ours = model.forward(input).logits.into_data().to_vec::<f32>().unwrap();
            assert_eq!(ours.len(), theirs.len());
            let max_diff = ours.iter().zip(&theirs).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
            let scale = ours.iter().fold(1.0f32, |m, a| m.max(a.abs()));
            assert!(max_diff < 1e-5 * scale, "tied {tied}: logits (up to {scale}) differ by up to {max_diff}");
            std::fs::remove_dir_all(dir).unwrap();
        }
    }

    #[test]
    fn state_dict_matches_the_file_and_nanogpts_order() {
        let model: Gpt<B> = config(true).init_seeded(2, &FlexDevice);
        let dict = nanogpt_state_dict(&model).unwrap();
        let names: Vec<&str> = dict.iter().map(|(n, _, _)| n.as_str()).collect();
        assert_eq!(names, nanogpt_names(2));
        for (name, shape, values) in &dict {
            assert_eq!(shape.iter().product::<usize>(), values.len(), "{name}");
        }
        // Every parameter of the lab model lands somewhere: the tied head is the one extra copy.
        let exported: usize = dict.iter().map(|(_, _, v)| v.len()).sum();
        assert_eq!(exported, model.num_params() + 17 * 64);
    }

    #[test]
    fn writes_atomically_and_refuses_a_config_that_does_not_match() {
        let config = config(true);
        let model: Gpt<B> = config.init_seeded(3, &FlexDevice);
        let dir = scratch("atomic");
        let path = dir.join("model.safetensors");
        std::fs::write(&path, b"an older export").unwrap();
        export_safetensors(&model, &config, &path).unwrap();
        assert!(SafeTensors::deserialize(&std::fs::read(&path).unwrap()).is_ok(), "replaced whole");
        let listing = |dir: &Path| {
            let mut names: Vec<String> = std::fs::read_dir(dir)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            names
        };
        assert_eq!(listing(&dir), ["model.safetensors"], "no temporary file left behind");

        let other = dir.join("other.safetensors");
        for wrong in
            [config.clone().with_tie_embeddings(false), config.clone().with_d_ff(128), config.clone().with_n_heads(3)]
        {
            let err = export_safetensors(&model, &wrong, &other).unwrap_err();
            assert!(matches!(err, ExportError::ConfigMismatch(_)), "{err}");
        }
        // A directory that does not exist: the write fails and leaves nothing.
        let missing = dir.join("no-such-dir").join("model.safetensors");
        assert!(export_safetensors(&model, &config, &missing).is_err());
        assert_eq!(listing(&dir), ["model.safetensors"]);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
