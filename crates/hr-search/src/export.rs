//! Exporting an index for other tools: the vectors as NumPy `.npy` files (float32, C order)
//! and the item ids in the same order.

use std::path::Path;

use crate::error::{Error, Result};
use crate::index::Index;

/// The `.npy` (format 1.0) encoding of a float32 matrix `rows x cols`.
pub fn npy_bytes(data: &[f32], rows: usize, cols: usize) -> Vec<u8> {
    let mut header =
        format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({rows}, {cols}), }}");
    // magic (6) + version (2) + header length (2) + header, padded with spaces and a newline
    // to a multiple of 64 bytes.
    let unpadded = 10 + header.len() + 1;
    header.push_str(&" ".repeat(unpadded.next_multiple_of(64) - unpadded));
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len() + data.len() * 4);
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    for v in data {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

/// Writes `embeddings.npy` (and `meta_embeddings.npy` for mid fusion) and `ids.txt` (one id
/// per line, in row order) into `out`; returns the files written.
pub fn export(index: &Index, out: &Path) -> Result<Vec<String>> {
    std::fs::create_dir_all(out).map_err(Error::io(out))?;
    let (n, dim) = (index.len(), index.manifest.plan.dim);
    let mut files = Vec::new();
    let mut write = |name: &str, bytes: &[u8]| -> Result<()> {
        let path = out.join(name);
        hr_core::write_atomic(&path, bytes)?;
        files.push(name.to_string());
        Ok(())
    };
    write(
        "embeddings.npy",
        &npy_bytes(&index.vectors.to_vec_f32()?, n, dim),
    )?;
    if let Some(m) = &index.meta_vectors {
        write("meta_embeddings.npy", &npy_bytes(&m.to_vec_f32()?, n, dim))?;
    }
    let ids: String = index.items.iter().map(|i| format!("{}\n", i.id)).collect();
    write("ids.txt", ids.as_bytes())?;
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn npy_header_is_aligned_and_describes_the_matrix() {
        let b = npy_bytes(&[1.0, -2.5, 3.0, 0.0, 5.0, 6.0], 2, 3);
        let hlen = u16::from_le_bytes([b[8], b[9]]) as usize;
        assert_eq!(&b[..8], b"\x93NUMPY\x01\x00");
        assert_eq!((10 + hlen) % 64, 0);
        let header = std::str::from_utf8(&b[10..10 + hlen]).unwrap();
        assert!(header.starts_with("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }"));
        assert!(header.ends_with('\n'));
        assert_eq!(
            &b[10 + hlen..10 + hlen + 8],
            &[0, 0, 128, 63, 0, 0, 32, 192]
        );
        assert_eq!(b.len(), 10 + hlen + 24);
    }
}
