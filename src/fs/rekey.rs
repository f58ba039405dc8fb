//! Re-keying a folder when a share is revoked: every directory, file and
//! link under it is copied to a new record name under a new key, so
//! whoever held the old names and keys finds and decrypts nothing written
//! afterwards. A file's content blocks are either left as they are, the
//! new record noting the old name and key they are sealed under (its
//! `priors`) until the file's next content write seals them all again
//! (lazy: the revoked user could read those bytes already), or
//! re-encrypted at once (eager). The copies carry the scope given (the
//! folder's new scope when writers remain, so their new grants apply).
//! The caller swaps the folder's entry in its directory and then deletes
//! the old records.

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
    /// Files whose content keeps its old key until their next write.
    pub lazy: usize,
}

/// A file re-keyed lazily more often than this without a write between
/// is re-encrypted instead (its record lists at most this many old keys).
const MAX_PRIORS: usize = 8;

impl<S: BlockStore> Vault<S> {
    /// Copies the tree under directory `top` to new names and keys, tagged
    /// `scope`, file content re-encrypted if `eager`; returns the new top
    /// directory and what was done.
    pub async fn rekey(
        self: &Arc<Self>,
        top: &Link,
        scope: Option<Scope>,
        eager: bool,
    ) -> Result<(Link, Rekeyed), FsError> {
        let mut done = Rekeyed::default();
        let new = self.rekey_dir(top, scope, eager, &mut done).await?;
        Ok((new, done))
    }

    async fn rekey_dir(
        self: &Arc<Self>,
        dir: &Link,
        scope: Option<Scope>,
        eager: bool,
        done: &mut Rekeyed,
    ) -> Result<Link, FsError> {
        let v = self.load(dir).await?;
        let mut entries = Entries::new();
        for (name, e) in v.obj.entries().ok_or(FsError::NotDir)?.iter() {
            let new = match e.link.kind {
                Kind::Dir => Box::pin(self.rekey_dir(&e.link, scope, eager, done)).await?,
                Kind::File if !eager => match self.rekey_file(&e.link, scope).await? {
                    Some((l, lazy)) => {
                        done.files += 1;
                        done.lazy += lazy as usize;
                        l
                    }
                    None => self.recrypt_file(&e.link, scope, done).await?,
                },
                Kind::File => self.recrypt_file(&e.link, scope, done).await?,
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

    /// A copy of file `link` under a new name and key, tagged `scope`, its
    /// content blocks left as they are (their key noted in its priors,
    /// and `true`, if it has any); `None` if it has been re-keyed so often
    /// it must be re-encrypted.
    /// Kept versions are not carried over (their blocks are sealed under
    /// the old name).
    async fn rekey_file(
        &self,
        link: &Link,
        scope: Option<Scope>,
    ) -> Result<Option<(Link, bool)>, FsError> {
        let mut obj = self.load(link).await?.obj;
        let c = obj.content_mut()?;
        if c.priors.len() >= MAX_PRIORS {
            return Ok(None);
        }
        let blocks = !c.extents.is_empty();
        if blocks {
            c.priors.insert(0, link.clone());
        }
        c.history.kept.clear();
        let new = Link::fresh(Kind::File);
        self.clocks
            .set_scope(self.identity().record_key(&new.name), scope);
        self.save(&new, &obj, 0).await?;
        Ok(Some((new, blocks)))
    }

    /// A copy of file `link` under a new name and key, tagged `scope`,
    /// its content re-encrypted.
    async fn recrypt_file(
        self: &Arc<Self>,
        link: &Link,
        scope: Option<Scope>,
        done: &mut Rekeyed,
    ) -> Result<Link, FsError> {
        // The copy takes the scope the file has when copied.
        let id = self.identity();
        self.clocks.set_scope(id.record_key(&link.name), scope);
        let mut f = OpenFile::open(self, link.clone()).await?;
        done.bytes += f.size();
        let (l, _) = f.write_unlinked_copy(self, Durability::Later).await?;
        done.files += 1;
        Ok(l)
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

#[cfg(test)]
mod tests {
    use super::super::mem_store::MemStore;
    use super::super::object::{Attrs, CHUNK_SIZE};
    use super::super::{Identity, Vault};
    use super::*;
    use std::collections::HashSet;

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i % 251) as u8).collect()
    }

    /// A vault with `/team/big` (two and a half blocks), `/team/small`
    /// and `/team/many` (enough extents for an index tree).
    async fn team() -> (Arc<Vault<MemStore>>, Link) {
        let v = Vault::new(Arc::new(MemStore::default()), Identity::generate());
        let attrs = || Attrs::new(0o644, 0, 0);
        let (team, _) = v
            .create(&v.root(), b"team", Kind::Dir, Attrs::new(0o755, 0, 0), None)
            .await
            .unwrap();
        let (big, s) = v
            .create(&team, b"big", Kind::File, attrs(), None)
            .await
            .unwrap();
        let mut f = OpenFile::from_state(big, s);
        f.write(&v, 0, &pattern(2 * CHUNK_SIZE + CHUNK_SIZE / 2))
            .await
            .unwrap();
        f.flush(&v, Durability::Later).await.unwrap();
        let (small, s) = v
            .create(&team, b"small", Kind::File, attrs(), None)
            .await
            .unwrap();
        let mut f = OpenFile::from_state(small, s);
        f.write(&v, 0, b"small file").await.unwrap();
        f.flush(&v, Durability::Later).await.unwrap();
        let (many, s) = v
            .create(&team, b"many", Kind::File, attrs(), None)
            .await
            .unwrap();
        let mut f = OpenFile::from_state(many, s);
        for i in 0..300u64 {
            f.write(&v, i * 10_000, &[i as u8; 100]).await.unwrap();
        }
        f.flush(&v, Durability::Later).await.unwrap();
        (v, team)
    }

    async fn file(v: &Arc<Vault<MemStore>>, dir: &Link, name: &[u8]) -> (Link, OpenFile) {
        let link = v.load(dir).await.unwrap().obj.entry(name).unwrap();
        let f = OpenFile::open(v, link.clone()).await.unwrap();
        (link, f)
    }

    fn blocks(f: &OpenFile) -> HashSet<crate::id::Id> {
        f.state.obj.blocks().into_iter().collect()
    }

    #[tokio::test]
    async fn a_lazy_rekey_moves_records_and_the_next_write_moves_content() {
        let (v, team) = team().await;
        let (old_big, f) = file(&v, &team, b"big").await;
        let old_blocks = blocks(&f);
        let (old_many, m) = file(&v, &team, b"many").await;
        assert!(!m.state.obj.content().unwrap().index_blocks.is_empty());

        let (new_team, done) = v.rekey(&team, None, false).await.unwrap();
        assert_eq!((done.dirs, done.files, done.lazy, done.bytes), (1, 3, 2, 0));
        v.delete_old(&done.old).await;
        let (new_big, mut f) = file(&v, &new_team, b"big").await;
        assert_ne!(new_big.name, old_big.name);
        // The content stayed where it was; the record moved.
        let content = f.state.obj.content().unwrap().clone();
        assert_eq!(content.priors, vec![old_big.clone()]);
        let data = pattern(2 * CHUNK_SIZE + CHUNK_SIZE / 2);
        assert_eq!(
            content
                .extents
                .blocks()
                .iter()
                .map(|b| b.key)
                .collect::<HashSet<_>>(),
            old_blocks
        );
        assert_eq!(f.read(&v, 0, data.len()).await.unwrap(), data);
        // The old key opens neither the new record nor the old one (gone).
        let probe = Link {
            name: new_big.name.clone(),
            ..old_big.clone()
        };
        assert!(v.load(&probe).await.is_err());
        assert!(v.load(&old_big).await.is_err());
        // The index tree moved to the new key: it loads, the old key fails.
        let (new_many, mut m) = file(&v, &new_team, b"many").await;
        assert_eq!(m.read(&v, 299 * 10_000, 100).await.unwrap(), vec![43; 100]);
        let probe = Link {
            name: new_many.name.clone(),
            ..old_many
        };
        assert!(v.load(&probe).await.is_err());
        let (_, mut s) = file(&v, &new_team, b"small").await;
        assert_eq!(s.read(&v, 0, 100).await.unwrap(), b"small file");

        // The next write seals the whole content under the new key.
        f.write(&v, 5, b"NEW").await.unwrap();
        f.flush(&v, Durability::Later).await.unwrap();
        let (_, mut g) = file(&v, &new_team, b"big").await;
        let c = g.state.obj.content().unwrap().clone();
        assert!(c.priors.is_empty());
        let now: HashSet<_> = c.extents.blocks().into_iter().collect();
        assert!(now.iter().all(|b| !old_blocks.contains(&b.key)));
        for b in now {
            // Opens under the file's own link, not under the old one.
            assert!(v.under_prior(&new_big, &[], b).await.unwrap().is_none());
            assert!(v.under_prior(&old_big, &[], b).await.is_err());
        }
        let mut want = data.clone();
        want[5..8].copy_from_slice(b"NEW");
        assert_eq!(g.read(&v, 0, want.len()).await.unwrap(), want);
    }

    #[tokio::test]
    async fn an_eager_rekey_re_encrypts_content_at_once() {
        let (v, team) = team().await;
        let (_, f) = file(&v, &team, b"big").await;
        let old_blocks = blocks(&f);
        // Lazily first, then eagerly: the content read through the priors
        // is sealed again.
        let (team, _) = v.rekey(&team, None, false).await.unwrap();
        let (new_team, done) = v.rekey(&team, None, true).await.unwrap();
        assert_eq!(done.lazy, 0);
        assert!(done.bytes > 2 * CHUNK_SIZE as u64);
        let (_, mut f) = file(&v, &new_team, b"big").await;
        let c = f.state.obj.content().unwrap().clone();
        assert!(c.priors.is_empty());
        assert!(
            c.extents
                .blocks()
                .iter()
                .all(|b| !old_blocks.contains(&b.key))
        );
        let data = pattern(2 * CHUNK_SIZE + CHUNK_SIZE / 2);
        assert_eq!(f.read(&v, 0, data.len()).await.unwrap(), data);
    }

    #[tokio::test]
    async fn rekeys_without_writes_between_stack_their_keys_up_to_a_bound() {
        let (v, mut team) = team().await;
        for i in 1..=MAX_PRIORS + 2 {
            let (t, done) = v.rekey(&team, None, false).await.unwrap();
            team = t;
            let (_, mut f) = file(&v, &team, b"big").await;
            let n = f.state.obj.content().unwrap().priors.len();
            // Past the bound the file is re-encrypted (no priors left).
            assert_eq!(
                n,
                if i <= MAX_PRIORS {
                    i
                } else {
                    i - MAX_PRIORS - 1
                }
            );
            // (`big` and `many` reach the bound together; `small` is inline.)
            assert_eq!(done.lazy, if i == MAX_PRIORS + 1 { 0 } else { 2 });
            let data = pattern(2 * CHUNK_SIZE + CHUNK_SIZE / 2);
            assert_eq!(f.read(&v, 0, data.len()).await.unwrap(), data);
        }
    }
}
