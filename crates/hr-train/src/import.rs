//! `hr-train import-weights efficientat FILE.pt --out FILE.safetensors`: converts a published
//! EfficientAT checkpoint (`torch.save(model.state_dict())`, e.g. `mn40_as_ext_mAP_487.pt`)
//! to safetensors without Python. The PyTorch zip/pickle container is read by the
//! `pytorch-reader` crate; anything but a plain state dict of tensors is refused (a training
//! checkpoint holding `model` / `optimizer` entries, arbitrary objects), the EfficientAT key
//! names are kept, and the file must match one MobileNetV3 width (`mn01` ... `mn40`) key for
//! key and shape for shape. `num_batches_tracked` counters are dropped (the loader ignores
//! them).

use std::collections::BTreeMap;
use std::path::Path;

use hr_models::mobilenet::MobileNetConfig;
use hr_tensor::Tensor;
use pytorch_reader::{DType, PickleValue, PytorchReader};

use crate::error::{Result, TrainError};

/// What an import wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct ImportSummary {
    /// The MobileNetV3 whose layout the file has (`mn40` for `mn40_as_ext`).
    pub model: String,
    /// Tensors written.
    pub tensors: usize,
    /// Scalars written.
    pub values: usize,
    /// Whether the classifier head (`classifier.*`) was in the file.
    pub has_head: bool,
}

/// The widths EfficientAT publishes (`mn01` ... `mn40`).
const WIDTHS: [&str; 8] = [
    "mn01", "mn02", "mn04", "mn05", "mn10", "mn20", "mn30", "mn40",
];

/// Refuses anything but a dict whose values are all tensors (`_metadata`, which
/// `state_dict()` attaches, is allowed).
fn check_plain_state_dict(src: &Path) -> Result<()> {
    let root = PytorchReader::read_pickle_data(src, None)
        .map_err(|e| TrainError::format(src, format!("not a readable PyTorch checkpoint: {e}")))?;
    let PickleValue::Dict(entries) = root else {
        return Err(TrainError::format(
            src,
            "the pickled object is not a dict (expected a state dict)",
        ));
    };
    let mut odd: Vec<String> = entries
        .iter()
        .filter(|(k, v)| k.as_str() != "_metadata" && !is_tensor(v))
        .map(|(k, v)| format!("`{k}` ({})", describe(v)))
        .collect();
    odd.sort();
    if odd.is_empty() {
        return Ok(());
    }
    Err(TrainError::format(
        src,
        format!(
            "not a plain state dict of tensors: {} (for a training checkpoint, save its model's state_dict() instead)",
            odd.join(", ")
        ),
    ))
}

fn is_tensor(v: &PickleValue) -> bool {
    matches!(v, PickleValue::Unsupported(t) if t.starts_with("torch.") && t.ends_with("Tensor") || t == "torch.nn.parameter.Parameter")
}

fn describe(v: &PickleValue) -> String {
    match v {
        PickleValue::Dict(d) => format!("a dict of {} entries", d.len()),
        PickleValue::List(l) => format!("a list of {}", l.len()),
        PickleValue::Unsupported(t) => format!("a {t}"),
        other => format!("{other:?}"),
    }
}

/// Reads the tensors of a plain state dict as f32 / f64 host tensors (integer counters
/// `*.num_batches_tracked` are dropped; other integer tensors are an error).
pub fn read_state_dict(src: &Path) -> Result<BTreeMap<String, Tensor>> {
    check_plain_state_dict(src)?;
    let reader = PytorchReader::new(src).map_err(|e| TrainError::format(src, e.to_string()))?;
    let mut out = BTreeMap::new();
    for (name, t) in reader.tensors() {
        if name.ends_with("num_batches_tracked") {
            continue;
        }
        let bytes = t
            .read()
            .map_err(|e| TrainError::format(src, format!("reading `{name}`: {e}")))?;
        let shape = t.shape().to_vec();
        let tensor = match t.dtype() {
            DType::F32 => Tensor::from_vec(decode(&bytes, f32::from_le_bytes), &shape)?,
            DType::F64 => Tensor::from_vec(decode(&bytes, f64::from_le_bytes), &shape)?,
            DType::F16 => Tensor::from_vec(decode(&bytes, half::f16::from_le_bytes), &shape)?,
            DType::BF16 => Tensor::from_vec(decode(&bytes, half::bf16::from_le_bytes), &shape)?,
            other => {
                return Err(TrainError::format(
                    src,
                    format!(
                        "`{name}` is a {other:?} tensor; an EfficientAT state dict holds floats"
                    ),
                ))
            }
        };
        out.insert(name.clone(), tensor);
    }
    Ok(out)
}

/// Little-endian values of `N` bytes each (the reader hands out native-endian bytes of
/// little-endian files; every supported host is little-endian).
fn decode<T, const N: usize>(bytes: &[u8], f: fn([u8; N]) -> T) -> Vec<T> {
    bytes
        .chunks_exact(N)
        .map(|c| {
            let mut a = [0u8; N];
            a.copy_from_slice(c);
            f(a)
        })
        .collect()
}

/// The EfficientAT width whose layout `sd` has, or an error naming the closest width's
/// differences (the classifier head may be absent).
fn match_width(sd: &BTreeMap<String, Tensor>, src: &Path) -> Result<(String, bool)> {
    let has_head = sd.keys().any(|k| k.starts_with("classifier."));
    let mut best: Option<(usize, String, Vec<String>)> = None;
    for name in WIDTHS {
        let cfg = MobileNetConfig::from_name(name)?;
        let want: BTreeMap<String, Vec<usize>> = cfg
            .param_shapes()
            .into_iter()
            .filter(|(k, _, _)| has_head || !k.starts_with("classifier."))
            .map(|(k, s, _)| (k, s))
            .collect();
        // Unexpected keys first: they say most about what the file is.
        let mut diffs: Vec<String> = sd
            .keys()
            .filter(|k| !want.contains_key(*k))
            .map(|k| format!("unexpected `{k}`"))
            .collect();
        diffs.extend(want.iter().filter_map(|(k, s)| match sd.get(k) {
            None => Some(format!("missing `{k}`")),
            Some(t) if t.shape() != s.as_slice() => {
                Some(format!("`{k}` is {:?}, {name} has {s:?}", t.shape()))
            }
            Some(_) => None,
        }));
        if diffs.is_empty() {
            return Ok((name.to_string(), has_head));
        }
        if best.as_ref().is_none_or(|(n, _, _)| diffs.len() < *n) {
            best = Some((diffs.len(), name.to_string(), diffs));
        }
    }
    let (n, name, diffs) = best.unwrap_or_default();
    let shown: Vec<&str> = diffs.iter().take(12).map(String::as_str).collect();
    Err(TrainError::format(
        src,
        format!(
            "not an EfficientAT MobileNetV3 state dict: closest is {name} with {n} differences: {}{}",
            shown.join("; "),
            if n > shown.len() { "; ..." } else { "" }
        ),
    ))
}

/// Converts `src` (.pt) to `out` (.safetensors, written atomically).
pub fn import_efficientat(src: &Path, out: &Path) -> Result<ImportSummary> {
    let sd = read_state_dict(src)?;
    let (model, has_head) = match_width(&sd, src)?;
    let bytes = hr_nn::io::serialize_safetensors(sd.iter().map(|(k, t)| (k.as_str(), t)), None)?;
    hr_core::write_atomic(out, &bytes)?;
    Ok(ImportSummary {
        model,
        tensors: sd.len(),
        values: sd.values().map(Tensor::numel).sum(),
        has_head,
    })
}
