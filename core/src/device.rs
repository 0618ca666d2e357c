//! Which backend a binary runs on. Only `flex` is in every build; the GPU backends come with the
//! cargo features of the same names on the binaries (`--features wgpu`, `--features cuda`, each
//! with burn's kernel fusion and autotuning). Library code stays generic over the backend: only
//! the binaries pick one, through [`on_device!`](crate::on_device).

/// burn, for [`on_device!`](crate::on_device) expansions in crates that name it differently.
#[doc(hidden)]
pub use burn as __burn;

/// Where tensors live.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Device {
    /// burn's pure-Rust CPU backend (the default; what the tests use).
    Flex,
    /// WGPU on the default adapter: a laptop's GPU (feature `wgpu`).
    Wgpu,
    /// WGPU on a CPU adapter, e.g. Mesa's lavapipe (feature `wgpu`): what CI checks wgpu with.
    WgpuCpu,
    /// CUDA on the first GPU (feature `cuda`).
    Cuda,
}

impl Device {
    /// The cargo feature that brings this backend.
    pub fn feature(self) -> &'static str {
        match self {
            Device::Flex => "flex",
            Device::Wgpu | Device::WgpuCpu => "wgpu",
            Device::Cuda => "cuda",
        }
    }

    /// The name on the command line.
    pub fn name(self) -> String {
        clap::ValueEnum::to_possible_value(&self).expect("every device has a name").get_name().to_string()
    }

    /// The error for a backend this build lacks.
    pub fn missing(self, binary: &str) -> anyhow::Error {
        anyhow::anyhow!(
            "this {binary} was built without the {} backend: build it with `--features {}`",
            self.feature(),
            self.feature()
        )
    }
}

/// Runs `$body` with `$B` the backend type and `$dev` the device that `$device` (a [`Device`])
/// names, or, written `on_device!(autodiff device, binary, |B, dev| ...)`, with `$B` that backend
/// under `Autodiff`. `$body` returns an `anyhow::Result`; a backend this build lacks is an error
/// saying which feature brings it. The `wgpu` and `cuda` cfgs are those of the crate that expands
/// the macro: a binary's features must enable this crate's features of the same names.
#[macro_export]
macro_rules! on_device {
    (@with [$($wrap:tt)*] $device:expr, $binary:expr, |$B:ident, $dev:ident| $body:expr) => {{
        use $crate::device::{__burn, Device as __Device};
        match $device {
            __Device::Flex => {
                type $B = $crate::__wrap_backend!([$($wrap)*] __burn::backend::Flex);
                let $dev = __burn::backend::flex::FlexDevice;
                $body
            }
            #[cfg(feature = "wgpu")]
            __Device::Wgpu => {
                type $B = $crate::__wrap_backend!([$($wrap)*] __burn::backend::Wgpu);
                let $dev = __burn::backend::wgpu::WgpuDevice::DefaultDevice;
                $body
            }
            #[cfg(feature = "wgpu")]
            __Device::WgpuCpu => {
                type $B = $crate::__wrap_backend!([$($wrap)*] __burn::backend::Wgpu);
                let $dev = __burn::backend::wgpu::WgpuDevice::Cpu;
                $body
            }
            #[cfg(feature = "cuda")]
            __Device::Cuda => {
                type $B = $crate::__wrap_backend!([$($wrap)*] __burn::backend::Cuda);
                let $dev = __burn::backend::cuda::CudaDevice::default();
                $body
            }
            #[allow(unreachable_patterns, reason = "unreachable when every backend feature is on")]
            other => Err(other.missing($binary)),
        }
    }};
    (autodiff $device:expr, $binary:expr, |$B:ident, $dev:ident| $body:expr) => {
        $crate::on_device!(@with [__burn::backend::Autodiff] $device, $binary, |$B, $dev| $body)
    };
    ($device:expr, $binary:expr, |$B:ident, $dev:ident| $body:expr) => {
        $crate::on_device!(@with [] $device, $binary, |$B, $dev| $body)
    };
}

/// `[W] T` → `W<T>`, `[] T` → `T`.
#[doc(hidden)]
#[macro_export]
macro_rules! __wrap_backend {
    ([] $t:ty) => { $t };
    ([$($w:tt)+] $t:ty) => { $($w)+<$t> };
}
