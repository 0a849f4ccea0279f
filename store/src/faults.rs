//! The file backend, with an optional switch that makes disk writes fail (feature
//! `fault-injection`, for tests of storage faults). Without the feature the switch does
//! not exist and every call goes straight to redb's file backend.

use std::io;
use std::ops::Bound;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use redb::backends::FileBackend;
use redb::{BackendError, StorageBackend};

/// Makes the store's disk writes and syncs fail while set.
#[derive(Debug, Default)]
pub struct DiskFaults {
    failing: AtomicBool,
}

#[cfg_attr(not(feature = "fault-injection"), allow(dead_code))]
impl DiskFaults {
    /// From now on, every write and sync fails with an I/O error (or works again).
    pub fn set_failing(&self, failing: bool) {
        self.failing.store(failing, Ordering::SeqCst);
    }

    fn check(&self) -> io::Result<()> {
        if self.failing.load(Ordering::SeqCst) {
            Err(io::Error::other("injected disk fault"))
        } else {
            Ok(())
        }
    }
}

/// redb's file backend, with the fault switch when one was given.
#[derive(Debug)]
pub(crate) struct Backend {
    file: FileBackend,
    faults: Option<Arc<DiskFaults>>,
}

impl Backend {
    pub(crate) fn new(file: FileBackend, faults: Option<Arc<DiskFaults>>) -> Self {
        Self { file, faults }
    }

    fn check(&self) -> io::Result<()> {
        match &self.faults {
            Some(f) => f.check(),
            None => Ok(()),
        }
    }
}

impl StorageBackend for Backend {
    fn len(&self) -> io::Result<u64> {
        self.file.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        self.file.read(offset, out)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.check()?;
        self.file.set_len(len)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.check()?;
        self.file.sync_data()
    }

    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.check()?;
        self.file.write(offset, data)
    }

    fn close(&self) -> io::Result<()> {
        self.file.close()
    }

    // The file lock is how a second node on the same data dir is refused: every lock
    // call goes to the file backend unchanged.
    fn try_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.file.try_lock_range(start, end)
    }

    fn try_lock_shared_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, BackendError> {
        self.file.try_lock_shared_range(start, end)
    }

    fn lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.file.lock_range(start, end)
    }

    fn lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.file.lock_shared_range(start, end)
    }

    fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.file.unlock_range(start, end)
    }

    fn query_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.file.query_lock_range(start, end)
    }
}
