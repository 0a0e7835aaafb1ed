//! One contract, every cache: each function below runs against the in-memory cache and Redis.

use std::sync::Arc;
use std::time::Duration;

use domain::Cache;

/// How a test lets time pass: the in-memory cache's clock is moved; Redis keeps time itself, so
/// a test of Redis waits.
#[derive(Clone)]
enum Time {
    Clock(domain::Clock),
    Wait,
}

impl Time {
    async fn pass(&self, by: Duration) {
        match self {
            Self::Clock(clock) => clock.advance(by),
            Self::Wait => tokio::time::sleep(by).await,
        }
    }
}

const LONG: Duration = Duration::from_secs(60);
const SHORT: Duration = Duration::from_secs(1);
/// Comfortably past [`SHORT`]: what matters is that the entry is gone, not how fast.
const PAST_SHORT: Duration = Duration::from_millis(1600);

async fn values_are_stored_replaced_and_deleted(cache: Arc<dyn Cache>, _time: Time) {
    assert_eq!(cache.get("k").await.expect("get"), None);
    cache.set("k", b"one", LONG).await.expect("set");
    assert_eq!(
        cache.get("k").await.expect("get").as_deref(),
        Some(&b"one"[..])
    );
    cache.set("k", b"two", LONG).await.expect("replace");
    assert_eq!(
        cache.get("k").await.expect("get").as_deref(),
        Some(&b"two"[..])
    );
    assert!(cache.delete("k").await.expect("delete"));
    assert!(!cache.delete("k").await.expect("delete again"));
    assert_eq!(cache.get("k").await.expect("get"), None);
    cache.ping().await.expect("ping");
}

async fn get_many_answers_each_key_in_order(cache: Arc<dyn Cache>, _time: Time) {
    cache.set("a", b"1", LONG).await.expect("set");
    cache.set("c", b"3", LONG).await.expect("set");
    assert_eq!(
        cache.get_many(&["a", "b", "c"]).await.expect("get_many"),
        [Some(b"1".to_vec()), None, Some(b"3".to_vec())]
    );
    assert!(cache.get_many(&[]).await.expect("none").is_empty());
}

async fn entries_expire_after_their_ttl(cache: Arc<dyn Cache>, time: Time) {
    cache.set("short", b"x", SHORT).await.expect("set");
    cache.set("long", b"y", LONG).await.expect("set");
    time.pass(PAST_SHORT).await;
    assert_eq!(cache.get("short").await.expect("get"), None);
    assert_eq!(
        cache.get("long").await.expect("get").as_deref(),
        Some(&b"y"[..])
    );
    assert!(!cache.delete("short").await.expect("expired is not live"));
}

async fn set_if_absent_only_sets_missing_or_expired_keys(cache: Arc<dyn Cache>, time: Time) {
    assert!(
        cache
            .set_if_absent("once", b"a", SHORT)
            .await
            .expect("first")
    );
    assert!(
        !cache
            .set_if_absent("once", b"b", LONG)
            .await
            .expect("second")
    );
    assert_eq!(
        cache.get("once").await.expect("get").as_deref(),
        Some(&b"a"[..])
    );
    time.pass(PAST_SHORT).await;
    assert!(
        cache
            .set_if_absent("once", b"c", LONG)
            .await
            .expect("after expiry")
    );
    assert_eq!(
        cache.get("once").await.expect("get").as_deref(),
        Some(&b"c"[..])
    );
}

async fn incr_counts_from_zero_and_keeps_the_first_ttl(cache: Arc<dyn Cache>, time: Time) {
    assert_eq!(cache.incr("n", 1, SHORT).await.expect("incr"), 1);
    assert_eq!(cache.incr("n", 5, LONG).await.expect("incr"), 6);
    assert_eq!(cache.incr("n", -2, LONG).await.expect("incr"), 4);
    assert_eq!(
        cache.get("n").await.expect("get").as_deref(),
        Some(&b"4"[..])
    );
    time.pass(PAST_SHORT).await;
    assert_eq!(
        cache.get("n").await.expect("get"),
        None,
        "a later incr must not extend the TTL"
    );
    assert_eq!(cache.incr("n", 1, LONG).await.expect("incr"), 1);
    cache.set("text", b"abc", LONG).await.expect("set");
    assert!(cache.incr("text", 1, LONG).await.is_err());
}

async fn concurrent_increments_are_atomic(cache: Arc<dyn Cache>, _time: Time) {
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let cache = cache.clone();
            tokio::spawn(async move {
                for _ in 0..25 {
                    cache.incr("shared", 1, LONG).await.expect("incr");
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("task");
    }
    assert_eq!(cache.incr("shared", 0, LONG).await.expect("read"), 500);
    let winners: Vec<bool> = futures_join((0..10).map(|i| {
        let cache = cache.clone();
        async move {
            cache
                .set_if_absent("lock", format!("{i}").as_bytes(), LONG)
                .await
                .expect("nx")
        }
    }))
    .await;
    assert_eq!(
        winners.iter().filter(|w| **w).count(),
        1,
        "exactly one set_if_absent wins"
    );
}

async fn take_hands_a_value_to_exactly_one_caller(cache: Arc<dyn Cache>, time: Time) {
    assert_eq!(cache.take("absent").await.expect("take absent"), None);
    cache.set("once", b"code", LONG).await.expect("set");
    let takers = (0..10).map(|_| {
        let cache = cache.clone();
        async move { cache.take("once").await.expect("take").is_some() }
    });
    let got = futures_join(takers).await;
    assert_eq!(
        got.iter().filter(|g| **g).count(),
        1,
        "exactly one take wins"
    );
    assert_eq!(cache.get("once").await.expect("get"), None);
    cache
        .set("short", b"x", Duration::from_millis(50))
        .await
        .expect("set");
    time.pass(Duration::from_millis(150)).await;
    assert_eq!(cache.take("short").await.expect("take expired"), None);
}

async fn rates_admit_exactly_the_budget_under_concurrency(cache: Arc<dyn Cache>, time: Time) {
    let admitted: Vec<bool> = futures_join((0..30).map(|_| {
        let cache = cache.clone();
        async move {
            cache
                .rate("budget", 10, Duration::from_secs(60))
                .await
                .expect("rate")
                .is_none()
        }
    }))
    .await;
    assert_eq!(
        admitted.iter().filter(|a| **a).count(),
        10,
        "a burst of exactly the limit"
    );
    let wait = cache
        .rate("budget", 10, Duration::from_secs(60))
        .await
        .expect("rate")
        .expect("refused");
    assert!(
        wait > Duration::from_secs(4) && wait <= Duration::from_secs(6),
        "the next request waits about one interval (6 s): {wait:?}"
    );
    assert!(
        cache
            .rate("other", 10, Duration::from_secs(60))
            .await
            .expect("rate")
            .is_none(),
        "keys have separate budgets"
    );
    // A fast budget refills.
    for _ in 0..2 {
        assert!(
            cache
                .rate("fast", 2, Duration::from_millis(200))
                .await
                .expect("rate")
                .is_none()
        );
    }
    assert!(
        cache
            .rate("fast", 2, Duration::from_millis(200))
            .await
            .expect("rate")
            .is_some()
    );
    time.pass(Duration::from_millis(250)).await;
    assert!(
        cache
            .rate("fast", 2, Duration::from_millis(200))
            .await
            .expect("rate")
            .is_none()
    );
}

async fn futures_join<F: Future<Output = bool> + Send + 'static>(
    futures: impl Iterator<Item = F>,
) -> Vec<bool> {
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for handle in handles {
        out.push(handle.await.expect("task"));
    }
    out
}

macro_rules! conformance {
    ($($test:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test]
                async fn $test() {
                    let clock = domain::Clock::system();
                    let cache = mreg::cache::MemoryCache::with_clock(clock.clone());
                    super::$test(std::sync::Arc::new(cache), super::Time::Clock(clock)).await;
                }
            )*
        }

        mod redis {
            $(
                #[tokio::test]
                async fn $test() {
                    let Some(url) = crate::support::redis_available().await else { return };
                    let prefix = format!("mreg-test-{}:", uuid::Uuid::new_v4().simple());
                    let cache = mreg::cache::RedisCache::connect(&url, &prefix).await.expect("redis");
                    super::$test(std::sync::Arc::new(cache), super::Time::Wait).await;
                }
            )*

            #[tokio::test]
            async fn two_prefixes_do_not_see_each_other() {
                let Some(url) = crate::support::redis_available().await else { return };
                let a = mreg::cache::RedisCache::connect(&url, &format!("mreg-test-{}:", uuid::Uuid::new_v4().simple())).await.expect("a");
                let b = mreg::cache::RedisCache::connect(&url, &format!("mreg-test-{}:", uuid::Uuid::new_v4().simple())).await.expect("b");
                domain::Cache::set(&a, "k", b"a", super::LONG).await.expect("set");
                assert_eq!(domain::Cache::get(&b, "k").await.expect("get"), None);
            }
        }
    };
}

conformance!(
    values_are_stored_replaced_and_deleted,
    get_many_answers_each_key_in_order,
    entries_expire_after_their_ttl,
    set_if_absent_only_sets_missing_or_expired_keys,
    incr_counts_from_zero_and_keeps_the_first_ttl,
    concurrent_increments_are_atomic,
    take_hands_a_value_to_exactly_one_caller,
    rates_admit_exactly_the_budget_under_concurrency,
);
