//! What the remote stores' tests (S3, SFTP) share: a runtime, archive keys of the sample
//! manifest, incompressible data, and the checks every store must pass whatever its protocol.

use crate::manifest::tests::sample;
use crate::{ArchiveKey, ArchiveStore, StoreError};
use nkvm_domain::Compression;
use std::io::{Read, Write};

/// A runtime for the store's requests (with the process's TLS provider chosen).
pub(crate) fn runtime() -> tokio::runtime::Runtime {
    let _ = rustls::crypto::ring::default_provider().install_default();
    tokio::runtime::Runtime::new().expect("a runtime")
}

/// The key of the sample manifest with backup id `id`.
pub(crate) fn key(id: &str) -> ArchiveKey {
    let m = sample(id);
    ArchiveKey {
        cluster: m.cluster,
        namespace: m.namespace,
        pvc: m.pvc.name,
        id: m.backup_id,
        compression: Compression::Zstd,
        encrypted: false,
    }
}

/// `n` bytes that do not repeat or compress, the same for the same seed.
pub(crate) fn data(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Two writers of the same backup `id`, the second started before the first committed: the
/// first wins, the second's commit, a later check and a later begin are refused, and the
/// archive reads back as the first wrote it.
pub(crate) fn a_second_writer_never_overwrites(store: &dyn ArchiveStore, id: &str) {
    let mut first = store.begin(&key(id)).unwrap();
    first.write_all(b"first").unwrap();
    let mut second = store.begin(&key(id)).unwrap();
    second.write_all(b"second").unwrap();
    let stored = first.commit(&sample(id)).unwrap();
    let e = second.commit(&sample(id)).expect_err("refused");
    assert!(matches!(e, StoreError::AlreadyExists { .. }), "{e}");
    let e = store.check_writable(&key(id)).expect_err("refused");
    assert!(matches!(e, StoreError::AlreadyExists { .. }), "{e}");
    assert!(store.begin(&key(id)).is_err());
    assert_eq!(read_back(store, &stored.artifact), b"first");
}

/// The bytes `store` holds under `artifact`, as they are stored.
pub(crate) fn read_back(store: &dyn ArchiveStore, artifact: &str) -> Vec<u8> {
    let mut back = Vec::new();
    store
        .open(artifact)
        .unwrap()
        .read_to_end(&mut back)
        .unwrap();
    back
}
