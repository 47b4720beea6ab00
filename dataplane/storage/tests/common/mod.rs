//! Helpers shared by the integration tests: a real glommio executor per test.

use std::future::Future;

/// Runs `make()`'s future on a fresh glommio executor thread and returns its output.
pub(crate) fn run<F, Fut, T>(make: F) -> T
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T> + 'static,
    T: Send + 'static,
{
    glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .io_memory(512 << 10)
        .spawn(make)
        .expect("glommio executor")
        .join()
        .expect("executor thread")
}
