//! A `read_committed` consumer that records when each lead record key (the
//! lead id) is first seen on the leads topic.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

/// First sighting of every key, with the instant the consumer received it.
#[derive(Default)]
struct Seen {
    first: HashMap<Vec<u8>, Instant>,
    records: u64,
    /// Keys a run waits for. Records of earlier runs may still be arriving,
    /// so a plain count of distinct keys cannot tell when a run is done.
    watched: HashSet<Vec<u8>>,
    /// Watched keys seen so far.
    watched_seen: usize,
}

/// Records the keys of committed lead records until dropped.
pub struct KeyRecorder {
    seen: Arc<Mutex<Seen>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl KeyRecorder {
    /// Waits up to `topic_timeout` for `topic` to exist, then reads all its
    /// partitions from the beginning on a background thread.
    pub fn start(bootstrap: &str, topic: &str, topic_timeout: Duration) -> anyhow::Result<Self> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("group.id", format!("leadgen-load-{}", std::process::id()))
            .set("isolation.level", "read_committed")
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "false")
            // Caps the broker's wait before it returns a fetch response, so
            // the wait adds at most this much to a measured latency.
            .set("fetch.wait.max.ms", "10")
            .create()
            .context("failed to create the Kafka consumer")?;

        let partitions = wait_for_partitions(&consumer, topic, topic_timeout)?;
        let mut assignment = TopicPartitionList::new();
        for partition in partitions {
            assignment.add_partition_offset(topic, partition, Offset::Beginning)?;
        }
        consumer
            .assign(&assignment)
            .with_context(|| format!("failed to assign the partitions of `{topic}`"))?;

        let seen = Arc::new(Mutex::new(Seen::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let seen = seen.clone();
            let stop = stop.clone();
            std::thread::spawn(move || consume(consumer, &seen, &stop))
        };
        Ok(Self {
            seen,
            stop,
            thread: Some(thread),
        })
    }

    /// Number of distinct keys seen so far.
    pub fn distinct(&self) -> usize {
        self.seen.lock().expect("no panic while locked").first.len()
    }

    /// Number of records seen so far, repeats included.
    pub fn records(&self) -> u64 {
        self.seen.lock().expect("no panic while locked").records
    }

    /// Adds keys to wait for with [`KeyRecorder::watched_seen`].
    pub fn watch<'a>(&self, keys: impl IntoIterator<Item = &'a str>) {
        let mut seen = self.seen.lock().expect("no panic while locked");
        for key in keys {
            let key = key.as_bytes().to_vec();
            if seen.first.contains_key(&key) && !seen.watched.contains(&key) {
                seen.watched_seen += 1;
            }
            seen.watched.insert(key);
        }
    }

    /// Forgets the watched keys.
    pub fn clear_watch(&self) {
        let mut seen = self.seen.lock().expect("no panic while locked");
        seen.watched.clear();
        seen.watched_seen = 0;
    }

    /// Number of watched keys seen so far.
    pub fn watched_seen(&self) -> usize {
        self.seen
            .lock()
            .expect("no panic while locked")
            .watched_seen
    }

    /// When the record with this key was first received.
    pub fn seen_at(&self, key: &str) -> Option<Instant> {
        self.seen
            .lock()
            .expect("no panic while locked")
            .first
            .get(key.as_bytes())
            .copied()
    }

    /// Waits until `done` holds for the recorder, polling every 5 ms, or
    /// until `timeout`. Returns whether `done` held.
    pub async fn wait_until(&self, timeout: Duration, done: impl Fn(&Self) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if done(self) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

impl Drop for KeyRecorder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn wait_for_partitions(
    consumer: &BaseConsumer,
    topic: &str,
    timeout: Duration,
) -> anyhow::Result<Vec<i32>> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(metadata) = consumer.fetch_metadata(Some(topic), Duration::from_secs(5)) {
            let partitions: Vec<i32> = metadata
                .topics()
                .iter()
                .filter(|entry| entry.name() == topic && entry.error().is_none())
                .flat_map(|entry| entry.partitions().iter().map(|partition| partition.id()))
                .collect();
            if !partitions.is_empty() {
                return Ok(partitions);
            }
        }
        if Instant::now() >= deadline {
            bail!("topic `{topic}` did not appear within {timeout:?}; is the connector running?");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn consume(consumer: BaseConsumer, seen: &Mutex<Seen>, stop: &AtomicBool) {
    let mut errors = 0_u64;
    while !stop.load(Ordering::Relaxed) {
        match consumer.poll(Duration::from_millis(50)) {
            None => {}
            Some(Ok(message)) => {
                let received = Instant::now();
                let key = message.key().unwrap_or_default().to_vec();
                let mut seen = seen.lock().expect("no panic while locked");
                seen.records += 1;
                if seen.first.contains_key(&key) {
                    continue;
                }
                if seen.watched.contains(&key) {
                    seen.watched_seen += 1;
                }
                seen.first.insert(key, received);
            }
            Some(Err(error)) => {
                errors += 1;
                // Prints only the first errors, because later ones repeat them.
                if errors <= 5 {
                    eprintln!("leadgen-load: Kafka consumer error: {error}");
                }
            }
        }
    }
}
