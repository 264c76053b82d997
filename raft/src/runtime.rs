//! The async runtime openraft runs on: tokio, with one difference. The randomness openraft draws
//! (election timeouts, the first tick of each group) comes from [`rand::rng`] in a node, and from
//! a seeded generator on a thread that called [`seed_thread`], so that the deterministic
//! simulation replays a seed exactly.

use std::cell::Cell;
use std::future::Future;
use std::time::Duration;

use openraft::rt::{AsyncRuntime, OptionalSend};
use openraft_rt_tokio::TokioRuntime;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

thread_local! {
    static SEED: Cell<Option<u64>> = const { Cell::new(None) };
}

/// From now on, openraft's randomness on this thread follows `seed`. For single-threaded
/// simulations only: a node never calls it.
pub fn seed_thread(seed: u64) {
    SEED.with(|s| s.set(Some(seed)));
}

/// Ends [`seed_thread`] on this thread.
pub fn unseed_thread() {
    SEED.with(|s| s.set(None));
}

/// The next generator: from this thread's seed sequence if seeded, else from entropy.
fn next_rng() -> SmallRng {
    SEED.with(|s| match s.get() {
        Some(seed) => {
            // SplitMix64 step: every call gets a distinct, reproducible seed.
            let next = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
            s.set(Some(next));
            let mut z = next;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            SmallRng::seed_from_u64(z ^ (z >> 31))
        }
        None => SmallRng::seed_from_u64(rand::rng().next_u64()),
    })
}

/// Tokio, with randomness that [`seed_thread`] can make reproducible.
#[derive(Debug)]
pub struct ConclaveRuntime(TokioRuntime);

impl AsyncRuntime for ConclaveRuntime {
    type JoinError = <TokioRuntime as AsyncRuntime>::JoinError;
    type JoinHandle<T: OptionalSend + 'static> = <TokioRuntime as AsyncRuntime>::JoinHandle<T>;
    type Sleep = <TokioRuntime as AsyncRuntime>::Sleep;
    type Instant = <TokioRuntime as AsyncRuntime>::Instant;
    type TimeoutError = <TokioRuntime as AsyncRuntime>::TimeoutError;
    type Timeout<R, T: Future<Output = R> + OptionalSend> =
        <TokioRuntime as AsyncRuntime>::Timeout<R, T>;
    type ThreadLocalRng = SmallRng;
    type Mpsc = <TokioRuntime as AsyncRuntime>::Mpsc;
    type Watch = <TokioRuntime as AsyncRuntime>::Watch;
    type Oneshot = <TokioRuntime as AsyncRuntime>::Oneshot;
    type Mutex<T: OptionalSend + 'static> = <TokioRuntime as AsyncRuntime>::Mutex<T>;

    fn spawn<T>(future: T) -> Self::JoinHandle<T::Output>
    where
        T: Future + OptionalSend + 'static,
        T::Output: OptionalSend + 'static,
    {
        TokioRuntime::spawn(future)
    }

    fn sleep(duration: Duration) -> Self::Sleep {
        TokioRuntime::sleep(duration)
    }

    fn sleep_until(deadline: Self::Instant) -> Self::Sleep {
        TokioRuntime::sleep_until(deadline)
    }

    fn timeout<R, F: Future<Output = R> + OptionalSend>(
        duration: Duration,
        future: F,
    ) -> Self::Timeout<R, F> {
        TokioRuntime::timeout(duration, future)
    }

    fn timeout_at<R, F: Future<Output = R> + OptionalSend>(
        deadline: Self::Instant,
        future: F,
    ) -> Self::Timeout<R, F> {
        TokioRuntime::timeout_at(deadline, future)
    }

    fn is_panic(join_error: &Self::JoinError) -> bool {
        TokioRuntime::is_panic(join_error)
    }

    fn thread_rng() -> Self::ThreadLocalRng {
        next_rng()
    }

    fn new(threads: usize) -> Self {
        Self(TokioRuntime::new(threads))
    }

    fn block_on<F, T>(&mut self, future: F) -> T
    where
        F: Future<Output = T>,
    {
        self.0.block_on(future)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seeded_thread_draws_the_same_sequence_again() {
        let draw = || (0..4).map(|_| next_rng().next_u64()).collect::<Vec<_>>();
        seed_thread(7);
        let first = draw();
        seed_thread(7);
        let again = draw();
        seed_thread(8);
        let other = draw();
        unseed_thread();
        assert_eq!(first, again);
        assert_ne!(first, other);
    }
}
