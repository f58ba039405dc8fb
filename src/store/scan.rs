//! Rebuilding the index from the files on disk when the store opens.
//!
//! Only files at `<kind>/<xx>/<64 lower-case hex>` whose first two digits are
//! `<xx>` are items; anything else is logged and left alone (it is not ours
//! to delete). Blocks are indexed by size without reading them (every read
//! re-hashes anyway) and their claims from the file's header, except that
//! one whose data is larger than `MAX_BLOCK` cannot be a block and is removed. Records are read, decoded and verified, since the
//! index needs their sequence numbers: one that does not decode, verify or
//! match its file name is removed; one that cannot be read (an I/O error)
//! is logged and skipped, left for a later open.

use super::index::{BlockMeta, Index, RecordMeta};
use super::{Kind, StoreError, block_file, block_meta, decode_record, fsutil};
use crate::id::Id;
use crate::item::MAX_BLOCK;
use std::fs;
use std::path::Path;

/// Builds the index of the block files under `blocks` and the record files
/// under `records`.
pub fn build_index(blocks: &Path, records: &Path) -> Result<Index, StoreError> {
    let mut index = Index::default();
    for_each_item(blocks, |key, path, len| match block_file::peek(path, len) {
        Err(e) => log::error!("{}: unreadable, skipped: {e}", path.display()),
        Ok((_, data_len)) if data_len > MAX_BLOCK as u64 => {
            log::error!(
                "{}: {data_len} bytes is more than a block can be; removing it",
                path.display()
            );
            remove_logged(path);
        }
        Ok((claims, _)) => index.set_block(key, block_meta(len, &claims)),
    })?;
    for_each_item(records, |key, path, _| match fs::read(path) {
        Err(e) => log::error!("{}: unreadable, skipped: {e}", path.display()),
        Ok(bytes) => match decode_record(&bytes, key) {
            Ok(versions) => index.set_record(
                key,
                RecordMeta {
                    seq: versions[0].seq,
                    len: bytes.len() as u64,
                    owner: versions[0].owner,
                    versions: versions.len() as u32,
                },
            ),
            Err(why) => {
                log::error!("{}: corrupt record ({why}); removing it", path.display());
                remove_logged(path);
            }
        },
    })?;
    Ok(index)
}

/// Removes a bad file found while scanning, logging a failure.
/// What the index notes of an item.
pub enum Meta {
    Block(BlockMeta),
    Record(RecordMeta),
}

/// The index entry of item `key` of `kind` whose file is `bytes` (a
/// record's versions are checked; a block's data is not hashed). The error
/// is a reason for the log.
pub fn meta_of(kind: Kind, key: Id, bytes: Vec<u8>) -> Result<Meta, String> {
    let len = bytes.len() as u64;
    match kind {
        Kind::Block => {
            let f = block_file::split(bytes);
            if f.data.len() > MAX_BLOCK {
                return Err(format!(
                    "{} bytes is more than a block can be",
                    f.data.len()
                ));
            }
            Ok(Meta::Block(block_meta(len, &f.claims)))
        }
        Kind::Record => {
            let versions = decode_record(&bytes, key)?;
            Ok(Meta::Record(RecordMeta {
                seq: versions[0].seq,
                len,
                owner: versions[0].owner,
                versions: versions.len() as u32,
            }))
        }
    }
}

fn remove_logged(path: &Path) {
    if let Err(e) = fsutil::remove_file(path) {
        log::error!("{e}");
    }
}

/// Calls `f(key, path, size)` for each well-named regular file in the
/// two-level layout under `dir`.
pub fn for_each_item(dir: &Path, mut f: impl FnMut(Id, &Path, u64)) -> Result<(), StoreError> {
    let list = |d: &Path| fs::read_dir(d).map_err(|e| fsutil::io_err("list", d, e));
    for sub in list(dir)? {
        let sub = sub.map_err(|e| fsutil::io_err("list", dir, e))?;
        let sub_path = sub.path();
        let prefix = sub.file_name().to_string_lossy().into_owned();
        if !sub_path.is_dir() || prefix.len() != 2 {
            log::warn!(
                "{}: not part of the store layout, ignored",
                sub_path.display()
            );
            continue;
        }
        for file in list(&sub_path)? {
            let file = file.map_err(|e| fsutil::io_err("list", &sub_path, e))?;
            let path = file.path();
            let name = file.file_name().to_string_lossy().into_owned();
            let key = match name.parse::<Id>() {
                Ok(k) if k.to_hex() == name && name.starts_with(&prefix) => k,
                _ => {
                    log::warn!("{}: not an item file name, ignored", path.display());
                    continue;
                }
            };
            match file.metadata() {
                Ok(m) if m.is_file() => f(key, &path, m.len()),
                Ok(_) => log::warn!("{}: not a regular file, ignored", path.display()),
                Err(e) => log::error!("{}: cannot stat, skipped: {e}", path.display()),
            }
        }
    }
    Ok(())
}
