//! Typed errors of the tensor core. Every error names the op and the offending shapes or values.

use crate::{DType, Device};

/// Result alias used throughout hr-tensor.
pub type Result<T> = std::result::Result<T, Error>;

/// Everything that can go wrong in a tensor op.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Two operands have shapes that do not fit together.
    #[error("{op}: shape mismatch: {lhs:?} vs {rhs:?}")]
    ShapeMismatch {
        /// The op that failed.
        op: &'static str,
        /// Shape of the first operand.
        lhs: Vec<usize>,
        /// Shape of the second operand.
        rhs: Vec<usize>,
    },
    /// Two operands have different dtypes.
    #[error("{op}: dtype mismatch: {lhs:?} vs {rhs:?}")]
    DTypeMismatch {
        /// The op that failed.
        op: &'static str,
        /// Dtype of the first operand.
        lhs: DType,
        /// Dtype of the second operand.
        rhs: DType,
    },
    /// Two operands live on different devices.
    #[error("{op}: device mismatch: {lhs:?} vs {rhs:?}")]
    DeviceMismatch {
        /// The op that failed.
        op: &'static str,
        /// Device of the first operand.
        lhs: Device,
        /// Device of the second operand.
        rhs: Device,
    },
    /// The op is not available for this dtype on this device.
    #[error("{op}: dtype {dtype:?} is not supported on {device:?}")]
    UnsupportedDType {
        /// The op that failed.
        op: &'static str,
        /// The dtype that was given.
        dtype: DType,
        /// The device the op ran on.
        device: Device,
    },
    /// A shape, axis or parameter is invalid for the op.
    #[error("{op}: {msg}")]
    InvalidArgument {
        /// The op that failed.
        op: &'static str,
        /// What is wrong, with the offending values.
        msg: String,
    },
    /// The CUDA runtime (driver or library) is not available on this machine.
    #[error("CUDA device {ordinal} unavailable: {reason}")]
    CudaUnavailable {
        /// Requested device ordinal.
        ordinal: usize,
        /// Why it is not available.
        reason: String,
    },
    /// A CUDA driver/library call failed.
    #[error("CUDA error in {op}: {msg}")]
    Cuda {
        /// What was being done.
        op: &'static str,
        /// The CUDA error string.
        msg: String,
    },
    /// The op has no implementation on this device yet.
    #[error("{op}: not implemented on {device:?}")]
    NotImplemented {
        /// The op.
        op: &'static str,
        /// The device.
        device: Device,
    },
}

impl Error {
    /// Shorthand for [`Error::InvalidArgument`].
    pub fn invalid(op: &'static str, msg: impl Into<String>) -> Self {
        Error::InvalidArgument {
            op,
            msg: msg.into(),
        }
    }
}
