//! Re-keying a folder when a share is revoked: every directory, file and
//! link under it is copied to a new record name under a new key (file
//! content re-encrypted), so whoever held the old names and keys finds and
//! decrypts nothing written afterwards. The copies carry the scope given
//! (the folder's new scope when writers remain, so their new grants
//! apply). The caller swaps the folder's entry in its directory and then
//! deletes the old records.

use super::object::{Body, Entries, Entry, Object};
use super::vault::Vault;
use super::{BlockStore, Durability, FsError, Kind, Link, OpenFile};
use crate::grant::Scope;
use std::sync::Arc;

/// What a re-key made and left behind.
#[derive(Debug, Default)]
pub struct Rekeyed {
    /// The old links, to delete once the new top is linked in.
    pub old: Vec<Link>,
    /// Directories and other objects copied.
    pub dirs: usize,
    pub files: usize,
    /// Bytes of file content re-encrypted.
    pub bytes: u64,
}

impl<S: BlockStore> Vault<S> {
    /// Copies the tree under directory `top` to new names and keys, tagged
    /// `scope`; returns the new top directory and what was done.
    pub async fn rekey(
        self: &Arc<Self>,
        top: &Link,
        scope: Option<Scope>,
    ) -> Result<(Link, Rekeyed), FsError> {
        let mut done = Rekeyed::default();
        let new = self.rekey_dir(top, scope, &mut done).await?;
        Ok((new, done))
    }

    async fn rekey_dir(
        self: &Arc<Self>,
        dir: &Link,
        scope: Option<Scope>,
        done: &mut Rekeyed,
    ) -> Result<Link, FsError> {
        let v = self.load(dir).await?;
        let mut entries = Entries::new();
        for (name, e) in v.obj.entries().ok_or(FsError::NotDir)?.iter() {
            let new = match e.link.kind {
                Kind::Dir => Box::pin(self.rekey_dir(&e.link, scope, done)).await?,
                Kind::File => {
                    // The copy takes the scope the file has when copied.
                    let id = self.identity();
                    self.clocks.set_scope(id.record_key(&e.link.name), scope);
                    let mut f = OpenFile::open(self, e.link.clone()).await?;
                    done.bytes += f.size();
                    let (l, _) = f.write_unlinked_copy(self, Durability::Later).await?;
                    done.files += 1;
                    l
                }
                kind => {
                    let obj = self.load(&e.link).await?.obj;
                    let l = Link::fresh(kind);
                    self.clocks
                        .set_scope(self.identity().record_key(&l.name), scope);
                    self.save(&l, &obj, 0).await?;
                    done.files += 1;
                    l
                }
            };
            done.old.push(e.link.clone());
            entries.insert(
                name.clone(),
                Entry {
                    link: new,
                    attrs: e.attrs.clone(),
                },
            );
        }
        let new = Link::fresh(Kind::Dir);
        self.clocks
            .set_scope(self.identity().record_key(&new.name), scope);
        let obj = Object {
            attrs: v.obj.attrs.clone(),
            body: Body::Dir { entries },
        };
        self.save(&new, &obj, 0).await?;
        done.dirs += 1;
        done.old.push(dir.clone());
        Ok(new)
    }

    /// Deletes the records a re-key left behind, with untagged tombstones:
    /// a grant for the old scope then matches none of them, so a revoked
    /// writer cannot bring one back. Returns how many could not be
    /// deleted (logged).
    pub async fn delete_old(&self, old: &[Link]) -> usize {
        let mut failed = 0;
        for l in old {
            if let Err(e) = self.delete_as(l, true).await {
                log::warn!("an old record was not deleted: {e}");
                failed += 1;
            }
        }
        failed
    }

    /// Points entry `name` of directory `parent` at `new` instead of `old`
    /// (`Stale` if it points elsewhere now).
    pub async fn swap_entry(
        &self,
        parent: &Link,
        name: &[u8],
        old: &Link,
        new: &Link,
    ) -> Result<(), FsError> {
        let (name, old, new) = (name.to_vec(), old.clone(), new.clone());
        self.update(parent, move |dir| {
            let entries = dir.entries_mut().ok_or(FsError::NotDir)?;
            let e = entries.get_mut(&name).ok_or(FsError::NotFound)?;
            if e.link.name == new.name {
                return Ok(());
            }
            if e.link.name != old.name {
                return Err(FsError::Stale);
            }
            e.link = new.clone();
            super::vault::touch(&mut dir.attrs);
            Ok(())
        })
        .await
        .map(|_| ())
    }
}
