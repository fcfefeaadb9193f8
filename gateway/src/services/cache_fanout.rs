//! Cross-replica invalidation of the consent cache through Redis pub/sub.
//!
//! Replicas that share one consent store (the embedded ledger over one PostgreSQL database)
//! each cache decisions' inputs. When one replica stores or revokes a consent, it publishes
//! the patient's keyed hash on `{prefix}:consent-changed`; every replica subscribes, refreshes
//! its embedded ledger from the shared store (it sees another replica's blocks only then), and
//! drops the patient's cache entry.
//!
//! **Invariant:** fail closed. From start until subscribed and refreshed, and whenever the
//! subscription breaks, the replica bypasses its cache and refreshes its ledger before every
//! load ([`ConsentService::set_cache_bypass`]): a change it was not told of is still seen.
//! Announcements that cannot be published are retried until they are (a replica whose own
//! link to Redis is down may still have subscribers that are not). The subscription is
//! PINGed every second, so that a connection that died silently is noticed.
//!
//! Messages carry `{origin} {patient key}`: a replica's random id and the keyed hash (HMAC
//! with the consortium key), never a clear identifier. Leaves out: the cache itself
//! (`consent_service.rs`).

use std::collections::BTreeSet;
use std::sync::{Arc, Weak};
use std::time::Duration;

use futures_util::StreamExt;
use prometheus::{IntCounterVec, IntGauge};
use redis::AsyncCommands;

use crate::config::CacheConfig;
use crate::services::consent::{ANY_PATIENT, ConsentService};

/// The channel's name below the configured prefix.
pub const CHANNEL_SUFFIX: &str = "consent-changed";
/// Longest wait for Redis to answer a connect, subscribe or publish.
const REDIS_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest pause between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How often the subscription is checked with a PING (a connection that died without a
/// close is found within about this plus [`PING_TIMEOUT`]).
const HEALTH_INTERVAL: Duration = Duration::from_secs(1);
const PING_TIMEOUT: Duration = Duration::from_secs(1);

/// The fan-out's metrics (no labels but fixed words).
#[derive(Clone)]
pub struct FanoutMetrics {
    /// 1 while subscribed and refreshed (the cache is in use), else 0.
    pub subscribed: IntGauge,
    /// Failures by kind (`connect`, `subscription-lost`, `publish`, `refresh`).
    pub errors: IntCounterVec,
    /// Invalidations received from other replicas.
    pub received: prometheus::IntCounter,
}

/// The fan-out could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum FanoutError {
    #[error("cache.redis_url: {0}")]
    Url(String),
    #[error("the consent service has no runtime to run the cache fan-out on")]
    NoRuntime,
}

/// Starts publishing this replica's changes and following the others' on the consent
/// service's runtime. The cache is bypassed until the first subscription is made.
pub fn start(
    service: &Arc<ConsentService>,
    config: &CacheConfig,
    metrics: FanoutMetrics,
) -> Result<(), FanoutError> {
    let Some(url) = &config.redis_url else {
        return Ok(());
    };
    let client = redis::Client::open(url.as_str()).map_err(|e| FanoutError::Url(e.to_string()))?;
    let handle = service.runtime_handle().ok_or(FanoutError::NoRuntime)?;
    let channel = format!("{}:{CHANNEL_SUFFIX}", config.redis_channel_prefix);
    let origin = uuid::Uuid::new_v4().simple().to_string();
    service.set_cache_bypass(true);
    metrics.subscribed.set(0);
    let (sender, receiver) = tokio::sync::mpsc::unbounded_channel();
    service.announce_to(sender);
    handle.spawn(publish(
        client.clone(),
        channel.clone(),
        origin.clone(),
        receiver,
        metrics.clone(),
    ));
    handle.spawn(follow(
        Arc::downgrade(service),
        client,
        channel,
        origin,
        metrics,
    ));
    Ok(())
}

/// Publishes announced patient keys, in order, retrying each until Redis takes it. Stops
/// when the consent service (the sender) is gone.
async fn publish(
    client: redis::Client,
    channel: String,
    origin: String,
    mut receiver: tokio::sync::mpsc::UnboundedReceiver<String>,
    metrics: FanoutMetrics,
) {
    let mut connection: Option<redis::aio::MultiplexedConnection> = None;
    let mut pending: BTreeSet<String> = BTreeSet::new();
    let mut backoff = Duration::from_millis(50);
    loop {
        if pending.is_empty() {
            match receiver.recv().await {
                Some(key) => {
                    pending.insert(key);
                }
                None => return,
            }
        }
        // Everything announced meanwhile goes in the same round, once per patient.
        while let Ok(key) = receiver.try_recv() {
            pending.insert(key);
        }
        if connection.is_none() {
            match tokio::time::timeout(REDIS_TIMEOUT, client.get_multiplexed_async_connection())
                .await
            {
                Ok(Ok(c)) => connection = Some(c),
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "cache fan-out: cannot connect to publish")
                }
                Err(_) => tracing::warn!("cache fan-out: connecting to publish timed out"),
            }
        }
        if let Some(c) = &mut connection {
            while let Some(key) = pending.first().cloned() {
                let message = format!("{origin} {key}");
                let sent =
                    tokio::time::timeout(REDIS_TIMEOUT, c.publish::<_, _, i64>(&channel, &message))
                        .await;
                match sent {
                    Ok(Ok(_)) => {
                        pending.remove(&key);
                    }
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "cache fan-out: publish failed");
                        break;
                    }
                    Err(_) => {
                        tracing::warn!("cache fan-out: publish timed out");
                        break;
                    }
                }
            }
        }
        if pending.is_empty() {
            backoff = Duration::from_millis(50);
        } else {
            metrics.errors.with_label_values(&["publish"]).inc();
            connection = None;
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }
}

/// Follows the channel: subscribe, refresh, use the cache; on any break, bypass the cache and
/// start again. Stops when the consent service is gone.
async fn follow(
    service: Weak<ConsentService>,
    client: redis::Client,
    channel: String,
    origin: String,
    metrics: FanoutMetrics,
) {
    let mut backoff = Duration::from_millis(50);
    loop {
        let subscribed = tokio::time::timeout(REDIS_TIMEOUT, async {
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(&channel).await?;
            Ok::<_, redis::RedisError>(pubsub)
        })
        .await;
        let pubsub = match subscribed {
            Ok(Ok(p)) => p,
            Ok(Err(e)) => {
                metrics.errors.with_label_values(&["connect"]).inc();
                tracing::warn!(error = %e, "cache fan-out: cannot subscribe; cache bypassed");
                if !pause(&service, &mut backoff).await {
                    return;
                }
                continue;
            }
            Err(_) => {
                metrics.errors.with_label_values(&["connect"]).inc();
                tracing::warn!("cache fan-out: subscribing timed out; cache bypassed");
                if !pause(&service, &mut backoff).await {
                    return;
                }
                continue;
            }
        };
        // Subscribed: whatever changed before now is in the shared store.
        {
            let Some(service) = service.upgrade() else {
                return;
            };
            match service.refresh_ledger().await {
                Ok(()) => {
                    service.invalidate_all();
                    service.set_cache_bypass(false);
                    metrics.subscribed.set(1);
                    backoff = Duration::from_millis(50);
                    tracing::info!("cache fan-out: subscribed; cache in use");
                }
                Err(e) => {
                    metrics.errors.with_label_values(&["refresh"]).inc();
                    tracing::warn!(error = %e, "cache fan-out: ledger refresh failed; cache bypassed");
                    drop(pubsub);
                    if !pause(&Arc::downgrade(&service), &mut backoff).await {
                        return;
                    }
                    continue;
                }
            }
        }
        let (mut sink, mut messages) = pubsub.split();
        let mut health = tokio::time::interval(HEALTH_INTERVAL);
        health.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        health.tick().await;
        loop {
            let message = tokio::select! {
                message = messages.next() => match message {
                    Some(m) => m,
                    None => break,
                },
                _ = health.tick() => {
                    let pong = tokio::time::timeout(PING_TIMEOUT, sink.ping::<redis::Value>()).await;
                    if matches!(pong, Ok(Ok(_))) {
                        continue;
                    }
                    break;
                }
            };
            let Some(service) = service.upgrade() else {
                return;
            };
            let Ok(payload) = message.get_payload::<String>() else {
                continue;
            };
            let Some((from, key)) = payload.split_once(' ') else {
                continue;
            };
            if from == origin {
                continue;
            }
            metrics.received.inc();
            // Refresh first: a load after the drop must read the new state.
            if let Err(e) = service.refresh_ledger().await {
                metrics.errors.with_label_values(&["refresh"]).inc();
                tracing::warn!(error = %e, "cache fan-out: ledger refresh failed; cache bypassed");
                service.set_cache_bypass(true);
                metrics.subscribed.set(0);
                break;
            }
            if key == ANY_PATIENT {
                service.invalidate_all();
            } else {
                service.invalidate(key);
            }
        }
        drop(messages);
        drop(sink);
        metrics
            .errors
            .with_label_values(&["subscription-lost"])
            .inc();
        metrics.subscribed.set(0);
        tracing::warn!("cache fan-out: subscription lost; cache bypassed until resubscribed");
        match service.upgrade() {
            Some(s) => s.set_cache_bypass(true),
            None => return,
        }
        if !pause(&service, &mut backoff).await {
            return;
        }
    }
}

/// Bypasses the cache and waits before the next attempt; `false` when the service is gone.
async fn pause(service: &Weak<ConsentService>, backoff: &mut Duration) -> bool {
    match service.upgrade() {
        Some(s) => s.set_cache_bypass(true),
        None => return false,
    }
    tokio::time::sleep(*backoff).await;
    *backoff = (*backoff * 2).min(MAX_BACKOFF);
    true
}
