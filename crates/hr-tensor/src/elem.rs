//! Element traits: [`Elem`] maps a Rust type to its [`DType`] and CPU storage variant;
//! [`Float`] is what the CPU kernels compute in (f32 and f64).

use half::{bf16, f16};

use crate::{storage::CpuStorage, DType};

/// A type that can be stored in a CPU tensor.
pub trait Elem: Copy + Send + Sync + std::fmt::Debug + 'static {
    /// The dtype tag of this type.
    const DTYPE: DType;
    /// Borrows the storage as `&[Self]` if the dtype matches.
    fn slice(s: &CpuStorage) -> Option<&[Self]>;
    /// Borrows the storage as `&mut [Self]` if the dtype matches.
    fn slice_mut(s: &mut CpuStorage) -> Option<&mut [Self]>;
    /// Wraps a vector as storage.
    fn into_storage(v: Vec<Self>) -> CpuStorage;
    /// Converts to f64 (exact for every supported type).
    fn to_f64(self) -> f64;
    /// Converts from f64 with rounding.
    fn from_f64(v: f64) -> Self;
}

macro_rules! impl_elem {
    ($t:ty, $variant:ident, $to:expr, $from:expr) => {
        impl Elem for $t {
            const DTYPE: DType = DType::$variant;
            fn slice(s: &CpuStorage) -> Option<&[Self]> {
                match s {
                    CpuStorage::$variant(v) => Some(v),
                    _ => None,
                }
            }
            fn slice_mut(s: &mut CpuStorage) -> Option<&mut [Self]> {
                match s {
                    CpuStorage::$variant(v) => Some(v),
                    _ => None,
                }
            }
            fn into_storage(v: Vec<Self>) -> CpuStorage {
                CpuStorage::$variant(v)
            }
            fn to_f64(self) -> f64 {
                $to(self)
            }
            fn from_f64(v: f64) -> Self {
                $from(v)
            }
        }
    };
}

impl_elem!(f32, F32, |x: f32| x as f64, |v: f64| v as f32);
impl_elem!(f64, F64, |x: f64| x, |v: f64| v);
impl_elem!(bf16, BF16, |x: bf16| x.to_f64(), bf16::from_f64);
impl_elem!(f16, F16, |x: f16| x.to_f64(), f16::from_f64);

/// A float type the CPU kernels compute in.
pub trait Float:
    Elem + num_traits::Float + Default + std::iter::Sum + num_traits::FromPrimitive
{
    /// Gauss error function.
    fn erf(self) -> Self;
    /// Converts a small constant.
    #[inline]
    fn c(v: f64) -> Self {
        <Self as Elem>::from_f64(v)
    }
}

impl Float for f32 {
    #[inline]
    fn erf(self) -> Self {
        libm::erff(self)
    }
}

impl Float for f64 {
    #[inline]
    fn erf(self) -> Self {
        libm::erf(self)
    }
}
