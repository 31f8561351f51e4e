//! Named model presets (`configs/models/*.toml`, embedded at compile time) and TOML parsing of
//! [`RetrieverConfig`].

use std::path::Path;

use crate::{Error, Result};

use crate::retriever::RetrieverConfig;

/// The presets shipped in `configs/models/`: (name, TOML text).
pub const PRESETS: [(&str, &str); 3] = [
    ("tiny", include_str!("../../../configs/models/tiny.toml")),
    (
        "paper-base",
        include_str!("../../../configs/models/paper-base.toml"),
    ),
    (
        "paper-large",
        include_str!("../../../configs/models/paper-large.toml"),
    ),
];

/// Names of the shipped presets.
pub fn preset_names() -> Vec<&'static str> {
    PRESETS.iter().map(|(n, _)| *n).collect()
}

/// Parses and validates a TOML model config; `origin` names it in errors.
pub fn from_toml_str(text: &str, origin: &str) -> Result<RetrieverConfig> {
    let cfg: RetrieverConfig =
        toml::from_str(text).map_err(|e| hr_core::FileError::format(origin, e.to_string()))?;
    cfg.validate()?;
    Ok(cfg)
}

/// Reads a TOML model config from a file.
pub fn from_toml_file(path: &Path) -> Result<RetrieverConfig> {
    let text = std::fs::read_to_string(path).map_err(hr_core::FileError::io(path))?;
    from_toml_str(&text, &path.display().to_string())
}

/// The shipped preset `name` (`tiny`, `paper-base`, `paper-large`).
pub fn preset(name: &str) -> Result<RetrieverConfig> {
    let (_, text) = PRESETS
        .iter()
        .find(|(n, _)| *n == name)
        .ok_or_else(|| Error::Config {
            key: "preset".into(),
            msg: format!("unknown preset {name:?}; known: {:?}", preset_names()),
        })?;
    from_toml_str(text, &format!("configs/models/{name}.toml"))
}
