//! Lead-rate task: creates leads in random forms at the configured rate
//! while the simulator runs.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::shared::Shared;

/// Shortest and longest sleep between two rounds of lead creation.
const MIN_TICK: Duration = Duration::from_millis(10);
const MAX_TICK: Duration = Duration::from_secs(1);

/// Creates leads until shutdown. Leads due in a round are created together,
/// so at high rates several share a `created_time` second.
pub(crate) async fn run_lead_rate(shared: Arc<Shared>) {
    let mut rate_changes = shared.rate.subscribe();
    let mut shutdown = shared.shutdown.subscribe();
    let mut due = 0.0_f64;
    let mut last = Instant::now();

    loop {
        let rate = *rate_changes.borrow_and_update();
        if rate <= 0.0 {
            due = 0.0;
            tokio::select! {
                changed = rate_changes.changed() => if changed.is_err() { break },
                _ = shutdown.wait_for(|stop| *stop) => break,
            }
            last = Instant::now();
            continue;
        }

        let tick = Duration::from_secs_f64(1.0 / rate).clamp(MIN_TICK, MAX_TICK);
        tokio::select! {
            () = tokio::time::sleep(tick) => {}
            changed = rate_changes.changed() => if changed.is_err() { break },
            _ = shutdown.wait_for(|stop| *stop) => break,
        }

        let now = Instant::now();
        due += rate * now.duration_since(last).as_secs_f64();
        last = now;
        let count = due.floor();
        due -= count;
        if count >= 1.0 {
            let created = shared.add_leads_to_random_forms(count as usize);
            tracing::debug!(created, leads_per_second = rate, "rate leads created");
        }
    }
    tracing::debug!("lead-rate task stopped");
}
