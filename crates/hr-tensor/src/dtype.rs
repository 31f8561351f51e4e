//! Element types.

/// Element type of a tensor. CPU ops compute in `F32` and `F64` (the latter for gradient checks);
/// `BF16`/`F16` are storage types that convert losslessly to f32.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DType {
    /// 32-bit IEEE float (the default).
    F32,
    /// 64-bit IEEE float (reference computations and gradient checks).
    F64,
    /// bfloat16 storage.
    BF16,
    /// IEEE half storage.
    F16,
}

impl DType {
    /// Size of one element in bytes.
    pub fn size_in_bytes(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::F64 => 8,
            DType::BF16 | DType::F16 => 2,
        }
    }

    /// Short lowercase name ("f32", "bf16", ...).
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F64 => "f64",
            DType::BF16 => "bf16",
            DType::F16 => "f16",
        }
    }
}
