//! safetensors files and atomic writes.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use half::{bf16, f16};
use hr_tensor::storage::CpuStorage;
use hr_tensor::Tensor;
use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;

use crate::{Error, Result};

/// The tensors and metadata of one safetensors file. Integer tensors (ids, masks, counters)
/// are converted to f64 tensors (exact below 2^53).
#[derive(Debug, Clone, Default)]
pub struct SafeFile {
    /// Tensors by name, in name order.
    pub tensors: BTreeMap<String, Tensor>,
    /// The file's `__metadata__` map.
    pub metadata: HashMap<String, String>,
}

impl SafeFile {
    /// The tensor `name`, or an error naming the file and key.
    pub fn get(&self, path: &Path, name: &str) -> Result<&Tensor> {
        self.tensors.get(name).ok_or_else(|| {
            Error::from(hr_core::FileError::format(
                path.to_path_buf(),
                format!("no tensor named {name:?}"),
            ))
        })
    }
}

/// Reads a safetensors file.
pub fn read_safetensors(path: &Path) -> Result<SafeFile> {
    let bytes = std::fs::read(path).map_err(hr_core::FileError::io(path))?;
    parse_safetensors(&bytes, path)
}

/// Parses the bytes of a safetensors file (`path` names it in errors).
pub fn parse_safetensors(bytes: &[u8], path: &Path) -> Result<SafeFile> {
    let fmt = |msg: String| Error::from(hr_core::FileError::format(path.to_path_buf(), msg));
    // A panic inside the safetensors parser on a hostile file is a format error naming it.
    let panicked = |m: String| fmt(format!("the safetensors parser panicked: {m}"));
    let st = hr_core::catch_panic(|| SafeTensors::deserialize(bytes))
        .map_err(panicked)?
        .map_err(|e| fmt(e.to_string()))?;
    let (_, meta) = SafeTensors::read_metadata(bytes).map_err(|e| fmt(e.to_string()))?;
    let mut tensors = BTreeMap::new();
    for (name, view) in st.tensors() {
        let t = view_to_tensor(&view).map_err(|m| fmt(format!("tensor {name:?}: {m}")))?;
        tensors.insert(name, t);
    }
    Ok(SafeFile {
        tensors,
        metadata: meta.metadata().clone().unwrap_or_default(),
    })
}

/// Decodes little-endian elements of `N` bytes.
fn le<const N: usize, T>(data: &[u8], f: impl Fn([u8; N]) -> T) -> Vec<T> {
    data.chunks_exact(N)
        .map(|c| {
            let mut a = [0u8; N];
            a.copy_from_slice(c);
            f(a)
        })
        .collect()
}

fn view_to_tensor(v: &TensorView<'_>) -> std::result::Result<Tensor, String> {
    let d = v.data();
    let storage = match v.dtype() {
        Dtype::F32 => CpuStorage::F32(le(d, f32::from_le_bytes)),
        Dtype::F64 => CpuStorage::F64(le(d, f64::from_le_bytes)),
        Dtype::BF16 => CpuStorage::BF16(le(d, |b| bf16::from_bits(u16::from_le_bytes(b)))),
        Dtype::F16 => CpuStorage::F16(le(d, |b| f16::from_bits(u16::from_le_bytes(b)))),
        Dtype::I64 => CpuStorage::F64(le(d, |b| i64::from_le_bytes(b) as f64)),
        Dtype::I32 => CpuStorage::F64(le(d, |b| i32::from_le_bytes(b) as f64)),
        Dtype::U8 => CpuStorage::F64(d.iter().map(|&b| b as f64).collect()),
        Dtype::BOOL => CpuStorage::F64(d.iter().map(|&b| (b != 0) as u8 as f64).collect()),
        other => return Err(format!("unsupported dtype {other:?}")),
    };
    Tensor::from_cpu_storage(storage, v.shape()).map_err(|e| e.to_string())
}

/// Little-endian bytes of a tensor and its safetensors dtype.
fn tensor_bytes(t: &Tensor) -> Result<(Dtype, Vec<u8>)> {
    let host = t.to_device(hr_tensor::Device::Cpu)?;
    let s = host.cpu_storage("save")?;
    Ok(match s {
        CpuStorage::F32(v) => (Dtype::F32, v.iter().flat_map(|x| x.to_le_bytes()).collect()),
        CpuStorage::F64(v) => (Dtype::F64, v.iter().flat_map(|x| x.to_le_bytes()).collect()),
        CpuStorage::BF16(v) => (
            Dtype::BF16,
            v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        ),
        CpuStorage::F16(v) => (Dtype::F16, v.iter().flat_map(|x| x.to_le_bytes()).collect()),
    })
}

/// Serialises named tensors (with optional metadata) to safetensors bytes.
pub fn serialize_safetensors<'a>(
    tensors: impl IntoIterator<Item = (&'a str, &'a Tensor)>,
    metadata: Option<HashMap<String, String>>,
) -> Result<Vec<u8>> {
    let encoded: Vec<(&str, Dtype, Vec<usize>, Vec<u8>)> = tensors
        .into_iter()
        .map(|(n, t)| {
            let (dt, b) = tensor_bytes(t)?;
            Ok((n, dt, t.shape().to_vec(), b))
        })
        .collect::<Result<_>>()?;
    let views = encoded
        .iter()
        .map(|(n, dt, shape, b)| {
            TensorView::new(*dt, shape.clone(), b)
                .map(|v| (n.to_string(), v))
                .map_err(|e| {
                    Error::from(hr_core::FileError::format(
                        "<memory>",
                        format!("tensor {n:?}: {e}"),
                    ))
                })
        })
        .collect::<Result<Vec<_>>>()?;
    safetensors::tensor::serialize(views, metadata)
        .map_err(|e| Error::from(hr_core::FileError::format("<memory>", e.to_string())))
}
