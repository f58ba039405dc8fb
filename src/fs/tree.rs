//! Whole-file and whole-tree operations on a vault, for the command-line
//! client: copy a local file in or out, list, remove, and recursive backup
//! and restore. Contents stream chunk by chunk through [`OpenFile`], so big
//! files never sit whole in memory and uploads run in parallel.

use super::object::{Attrs, CHUNK_SIZE, Kind, Link, Time};
use super::{BlockStore, Durability, FsError, OpenFile, Vault, Versioned, split_path};
use std::fs;
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::Path;
use std::sync::Arc;

/// Counts of a tree operation, for progress and the summary line.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TreeStats {
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub bytes: u64,
}

fn local_err(path: &Path, e: std::io::Error) -> FsError {
    FsError::Invalid(format!("{}: {e}", path.display()))
}

/// Attributes of a local file, for the copy in the store.
fn attrs_of(meta: &fs::Metadata) -> Attrs {
    let mut a = Attrs::new(meta.mode(), meta.uid(), meta.gid());
    if let Ok(m) = meta.modified() {
        a.mtime = Time::from_system(m);
    }
    if let Ok(t) = meta.accessed() {
        a.atime = Time::from_system(t);
    }
    a
}

impl<S: BlockStore> Vault<S> {
    /// Creates every missing directory of `path`; returns the last one.
    pub async fn mkdir_p(&self, path: &str) -> Result<Link, FsError> {
        let mut link = self.root();
        for part in split_path(path)? {
            let v = self.load(&link).await?;
            let existing = v.obj.entry(&part).ok();
            link = match existing {
                Some(l) if l.kind == Kind::Dir => l,
                Some(_) => return Err(FsError::NotDir),
                None => match self
                    .create(&link, &part, Kind::Dir, Attrs::new(0o755, 0, 0), None)
                    .await
                {
                    Ok((l, _)) => l,
                    Err(FsError::Exists) => {
                        let v = self.load(&link).await?;
                        v.obj.entry(&part)?
                    }
                    Err(e) => return Err(e),
                },
            };
        }
        Ok(link)
    }

    /// Copies the local file `local` to `path` (replacing a file there);
    /// `progress` is told of every chunk's bytes.
    pub async fn put_file(
        self: &Arc<Self>,
        local: &Path,
        path: &str,
        progress: &mut dyn FnMut(u64),
    ) -> Result<u64, FsError> {
        let meta = fs::metadata(local).map_err(|e| local_err(local, e))?;
        if !meta.is_file() {
            return Err(FsError::Invalid(format!(
                "{}: not a regular file",
                local.display()
            )));
        }
        let (parent, name) = self.resolve_parent(path).await?;
        let pv = self.load(&parent).await?;
        let attrs = attrs_of(&meta);
        let existing = match pv.obj.entry(&name) {
            Ok(l) => Some(l),
            Err(FsError::NotFound) => None,
            Err(e) => return Err(e),
        };
        let mut file = match existing {
            Some(l) if l.kind == Kind::File => {
                let mut f = OpenFile::open(self, l).await?;
                f.truncate(self, 0).await?;
                f
            }
            Some(l) if l.kind == Kind::Dir => return Err(FsError::IsDir),
            Some(_) => return Err(FsError::Exists),
            None => {
                let (l, st) = self
                    .create(&parent, &name, Kind::File, attrs.clone(), None)
                    .await?;
                OpenFile::from_state(l, st)
            }
        };
        let mut src = fs::File::open(local).map_err(|e| local_err(local, e))?;
        let mut buf = vec![0u8; CHUNK_SIZE];
        let mut off = 0u64;
        loop {
            let mut filled = 0;
            while filled < buf.len() {
                let n = src
                    .read(&mut buf[filled..])
                    .map_err(|e| local_err(local, e))?;
                if n == 0 {
                    break;
                }
                filled += n;
            }
            if filled == 0 {
                break;
            }
            file.write(self, off, &buf[..filled]).await?;
            off += filled as u64;
            progress(filled as u64);
        }
        let a = &mut file.state.obj.attrs;
        a.mode = attrs.mode & 0o7777;
        a.mtime = attrs.mtime;
        a.atime = attrs.atime;
        file.touch_attrs();
        file.flush(self, Durability::Later).await?;
        // The entry's attribute copy (what listings show, and what a mount
        // answers `readdirplus` with) follows the file's stored state.
        let a = file.state.obj.attrs.clone();
        if let Err(e) = self
            .note_entry_attrs(&parent, &name, &file.link, a, Durability::Later)
            .await
        {
            log::warn!("{path}: listing attributes not updated: {e}");
        }
        Ok(off)
    }

    /// Copies the file at `path` (or its kept `version`) to the local
    /// file `local` (written to a temporary name, then renamed), with its
    /// mode and times.
    pub async fn get_file(
        self: &Arc<Self>,
        path: &str,
        local: &Path,
        version: Option<u64>,
        progress: &mut dyn FnMut(u64),
    ) -> Result<u64, FsError> {
        let (link, mut v) = self.resolve(path).await?;
        if let Some(n) = version
            && link.kind == Kind::File
        {
            v = Versioned::new(self.load_version(&link, v.obj, n).await?, 0);
        }
        if link.kind != Kind::File {
            return Err(if link.kind == Kind::Dir {
                FsError::IsDir
            } else {
                FsError::Invalid("not a regular file".into())
            });
        }
        let mut file = OpenFile::from_state(link, v);
        let tmp = local.with_file_name(format!(
            ".{}.peerstore-tmp",
            local
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        ));
        let result = async {
            let mut out = fs::File::create(&tmp).map_err(|e| local_err(&tmp, e))?;
            let size = file.size();
            let mut off = 0u64;
            while off < size {
                let data = file.read(self, off, CHUNK_SIZE).await?;
                if data.is_empty() {
                    break;
                }
                out.write_all(&data).map_err(|e| local_err(&tmp, e))?;
                off += data.len() as u64;
                progress(data.len() as u64);
            }
            out.sync_all().map_err(|e| local_err(&tmp, e))?;
            let a = &file.state.obj.attrs;
            fs::set_permissions(&tmp, fs::Permissions::from_mode(a.mode & 0o7777))
                .map_err(|e| local_err(&tmp, e))?;
            out.set_times(
                fs::FileTimes::new()
                    .set_modified(a.mtime.to_system())
                    .set_accessed(a.atime.to_system()),
            )
            .map_err(|e| local_err(&tmp, e))?;
            fs::rename(&tmp, local).map_err(|e| local_err(local, e))?;
            Ok(off)
        }
        .await;
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }

    /// Removes `path`; a directory only with `recursive` unless empty.
    pub async fn remove_path(&self, path: &str, recursive: bool) -> Result<TreeStats, FsError> {
        let (parent, name) = self.resolve_parent(path).await?;
        let (link, v) = self.resolve(path).await?;
        let mut stats = TreeStats::default();
        if link.kind == Kind::Dir {
            if recursive {
                let entries: Vec<Vec<u8>> = v
                    .obj
                    .entries()
                    .map(|e| e.keys().cloned().collect())
                    .unwrap_or_default();
                for child in entries {
                    let child_path = format!(
                        "{}/{}",
                        path.trim_end_matches('/'),
                        String::from_utf8_lossy(&child)
                    );
                    let s = Box::pin(self.remove_path(&child_path, true)).await?;
                    stats.files += s.files;
                    stats.dirs += s.dirs;
                    stats.symlinks += s.symlinks;
                }
            }
            self.remove(&parent, &name, true, None).await?;
            stats.dirs += 1;
        } else {
            self.remove(&parent, &name, false, Some(path)).await?;
            if link.kind == Kind::File {
                stats.files += 1;
            } else {
                stats.symlinks += 1;
            }
        }
        Ok(stats)
    }

    /// Copies the local tree `local` into the store at `path`.
    pub async fn backup(
        self: &Arc<Self>,
        local: &Path,
        path: &str,
        progress: &mut dyn FnMut(u64),
    ) -> Result<TreeStats, FsError> {
        let mut stats = TreeStats::default();
        self.mkdir_p(path).await?;
        stats.dirs += 1;
        let mut stack = vec![(local.to_path_buf(), path.trim_end_matches('/').to_string())];
        while let Some((dir, into)) = stack.pop() {
            let mut entries: Vec<fs::DirEntry> = fs::read_dir(&dir)
                .map_err(|e| local_err(&dir, e))?
                .collect::<Result<_, _>>()
                .map_err(|e| local_err(&dir, e))?;
            entries.sort_by_key(|e| e.file_name());
            for e in entries {
                let name = e.file_name();
                let name = name.to_str().ok_or_else(|| {
                    FsError::Invalid(format!("{}: name is not UTF-8", e.path().display()))
                })?;
                let target = format!("{into}/{name}");
                let ft = e.file_type().map_err(|err| local_err(&e.path(), err))?;
                if ft.is_dir() {
                    self.mkdir_p(&target).await?;
                    stats.dirs += 1;
                    stack.push((e.path(), target));
                } else if ft.is_symlink() {
                    let dest = fs::read_link(e.path()).map_err(|err| local_err(&e.path(), err))?;
                    let (parent, leaf) = self.resolve_parent(&target).await?;
                    let _ = self.remove(&parent, &leaf, false, Some(&target)).await;
                    self.create(
                        &parent,
                        &leaf,
                        Kind::Symlink,
                        Attrs::new(0o777, 0, 0),
                        Some(dest.as_os_str().as_encoded_bytes().to_vec()),
                    )
                    .await?;
                    stats.symlinks += 1;
                } else if ft.is_file() {
                    stats.bytes += self.put_file(&e.path(), &target, progress).await?;
                    stats.files += 1;
                }
            }
        }
        Ok(stats)
    }

    /// Copies the store tree at `path` into the local directory `dest`.
    pub async fn restore(
        self: &Arc<Self>,
        path: &str,
        dest: &Path,
        progress: &mut dyn FnMut(u64),
    ) -> Result<TreeStats, FsError> {
        let mut stats = TreeStats::default();
        let (link, _) = self.resolve(path).await?;
        if link.kind != Kind::Dir {
            return Err(FsError::NotDir);
        }
        let mut stack = vec![(path.trim_end_matches('/').to_string(), dest.to_path_buf())];
        while let Some((from, into)) = stack.pop() {
            fs::create_dir_all(&into).map_err(|e| local_err(&into, e))?;
            stats.dirs += 1;
            let (_, v) = self
                .resolve(if from.is_empty() { "/" } else { &from })
                .await?;
            let entries = v.obj.entries().cloned().unwrap_or_default();
            for (name, child) in entries {
                let child = child.link;
                let name_s = String::from_utf8_lossy(&name).into_owned();
                let src = format!("{from}/{name_s}");
                let out = into.join(&name_s);
                match child.kind {
                    Kind::Dir => stack.push((src, out)),
                    Kind::File => {
                        stats.bytes += self.get_file(&src, &out, None, progress).await?;
                        stats.files += 1;
                    }
                    Kind::Symlink => {
                        let cv = self.load(&child).await?;
                        if let super::object::Body::Symlink { target } = cv.obj.body {
                            let _ = fs::remove_file(&out);
                            symlink(std::ffi::OsStr::from_bytes(&target), &out)
                                .map_err(|e| local_err(&out, e))?;
                            stats.symlinks += 1;
                        }
                    }
                    // Fifos and sockets hold no data: a backup skips them.
                    Kind::Fifo | Kind::Socket => {}
                }
            }
        }
        Ok(stats)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::Identity;
    use crate::fs::mem_store::MemStore;

    #[tokio::test]
    async fn backup_then_restore_is_identical() {
        let src = tempfile::tempdir().unwrap();
        let dst = tempfile::tempdir().unwrap();
        fs::create_dir_all(src.path().join("a/b")).unwrap();
        fs::write(src.path().join("empty"), b"").unwrap();
        fs::write(src.path().join("a/one"), b"1").unwrap();
        let big: Vec<u8> = (0..(CHUNK_SIZE * 2 + 17))
            .map(|i| (i % 251) as u8)
            .collect();
        fs::write(src.path().join("a/b/big"), &big).unwrap();
        fs::set_permissions(src.path().join("a/one"), fs::Permissions::from_mode(0o600)).unwrap();
        symlink("a/one", src.path().join("link")).unwrap();
        let v = Vault::new(Arc::new(MemStore::default()), Identity::generate());
        let mut seen = 0u64;
        let s = v
            .backup(src.path(), "/bk", &mut |n| seen += n)
            .await
            .unwrap();
        assert_eq!((s.files, s.symlinks, s.bytes), (3, 1, big.len() as u64 + 1));
        assert_eq!(seen, s.bytes);
        let r = v.restore("/bk", dst.path(), &mut |_| {}).await.unwrap();
        assert_eq!((r.files, r.symlinks, r.bytes), (3, 1, s.bytes));
        assert_eq!(fs::read(dst.path().join("a/b/big")).unwrap(), big);
        assert_eq!(fs::read(dst.path().join("empty")).unwrap(), b"");
        assert_eq!(
            fs::read_link(dst.path().join("link")).unwrap(),
            Path::new("a/one")
        );
        let m = fs::metadata(dst.path().join("a/one")).unwrap();
        assert_eq!(m.mode() & 0o777, 0o600);
        assert_eq!(
            m.modified().unwrap(),
            fs::metadata(src.path().join("a/one"))
                .unwrap()
                .modified()
                .unwrap()
        );
        // Overwrite with a shorter file, then remove recursively.
        fs::write(src.path().join("short"), b"xy").unwrap();
        v.put_file(&src.path().join("short"), "/bk/a/b/big", &mut |_| {})
            .await
            .unwrap();
        v.get_file("/bk/a/b/big", &dst.path().join("got"), None, &mut |_| {})
            .await
            .unwrap();
        assert_eq!(fs::read(dst.path().join("got")).unwrap(), b"xy");
        let rm = v.remove_path("/bk", true).await.unwrap();
        assert_eq!(rm.files, 3);
        assert_eq!(v.resolve("/bk").await.unwrap_err(), FsError::NotFound);
    }
}
