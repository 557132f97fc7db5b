//! Sharing each link's capacity among several workers, by demand.
//!
//! Every worker's engine paces each NIC at the capacity it is given. Several workers on one
//! link must not together exceed the link's capacity, or they overrun it. A fixed 1/K share
//! each is safe but wasteful: one TCP flow is carried by one worker, and it could never use
//! more than 1/K of the links. [`CapacityShares`] moves the capacity to the workers that use
//! it, from the counters the workers publish anyway ([`super::Snapshot`]), and the daemon
//! applies the new shares with `Command::SetNicCapacity`, between batches.
//!
//! Each round (one snapshot interval, 200 ms), for each NIC of total capacity `C` and `K`
//! workers:
//!
//! - a worker is **busy** on the NIC if its queue there holds more than a couple of packets
//!   or it sent at 90 % or more of its share. Such a worker asks for `max(rate, share) + C/K`:
//!   additive increase, so two busy workers converge to equal halves, while a lone busy
//!   worker gets nearly everything;
//! - an idle worker asks for 1.25 × what it sent, but never less than a floor of `C/(16K)`,
//!   so traffic that starts on it has room at once while it asks for more;
//! - the asks are met max-min fairly (water filling): the smallest in full, the others an
//!   equal part of what remains, and capacity that nobody asked for is spread equally (none
//!   stays unused).
//!
//! The trade-off is the floor: a lone bulk flow gets `1 − (K−1)/(16K)` of the link (97 % with
//! two workers), and a burst on an idle worker is paced at the floor for up to one round
//! (200 ms) before its share grows. A latency-critical feed that bursts far above its
//! average is better served by one worker (`vnic.queues = 1`, the default), which paces
//! nothing below the link's capacity.
//!
//! A NIC's shares are sent (all together) only when one of them moves by more than 1/64 of
//! `C`. The shares of a NIC never sum above `C`, and none is zero. A round waits until every
//! worker has published a snapshot newer than the last round's.
//!
//! Not owned here: the workers, the commands, the snapshots' timing.

use braid_core::engine::Command;

use super::Snapshot;

/// One share change: give `worker` this capacity on this NIC.
#[derive(Clone, Debug)]
pub struct ShareChange {
    /// Worker index.
    pub worker: usize,
    /// The command to apply to that worker's engine.
    pub command: Command,
}

/// One NIC as [`CapacityShares`] sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SharedNic {
    /// Its total capacity, bit/s; `None` for a NIC whose shares are left alone (one
    /// measured by each worker's estimator).
    pub capacity_bps: Option<u64>,
    /// Bytes the pacer charges per packet beyond the braid packet (the engine's
    /// `NicSpec::wire_overhead_bytes`): rates are compared in the pacer's units.
    pub wire_overhead_bytes: u32,
}

/// The capacity shares of K workers over N NICs.
#[derive(Clone, Debug)]
pub struct CapacityShares {
    /// The NICs, indexed like the snapshots' `nics`.
    nics: Vec<SharedNic>,
    /// `share[w][n]`: worker w's capacity on NIC n, bit/s.
    share: Vec<Vec<u64>>,
    /// Each worker's (`tx_bytes_count`, `tx_packets_count`) per NIC at the last round.
    last_sent: Vec<Vec<(u64, u64)>>,
    /// Whether each worker had a queue on each NIC at the last round.
    last_queued: Vec<Vec<bool>>,
    /// When the last round's snapshots were taken (ns), per worker.
    last_at: Vec<u64>,
    /// NICs whose shares must all be sent again (a worker refused or missed one).
    resend: Vec<bool>,
}

/// Queued bytes above which a worker counts as busy on a NIC (about two full packets), when
/// seen in two rounds in a row.
const BUSY_QUEUE_BYTES: u64 = 3_000;

impl CapacityShares {
    /// Equal shares of each NIC's capacity among `workers`.
    #[must_use]
    pub fn new(nics: Vec<SharedNic>, workers: usize) -> Self {
        let workers = workers.max(1);
        let share = (0..workers)
            .map(|_| {
                nics.iter()
                    .map(|n| (n.capacity_bps.unwrap_or(0) / workers as u64).max(1))
                    .collect()
            })
            .collect();
        Self {
            last_sent: vec![vec![(0, 0); nics.len()]; workers],
            last_queued: vec![vec![false; nics.len()]; workers],
            last_at: vec![0; workers],
            resend: vec![false; nics.len()],
            nics,
            share,
        }
    }

    /// A worker did not take `change` (it refused it or did not answer): the next round
    /// sends every share of that NIC again, whatever moved.
    pub fn refused(&mut self, change: &ShareChange) {
        let Command::SetNicCapacity { nic, .. } = change.command else {
            return;
        };
        if let Some(r) = self.resend.get_mut(usize::from(nic.0)) {
            *r = true;
        }
    }

    /// Worker `worker`'s current share of each NIC.
    #[must_use]
    pub fn shares(&self, worker: usize) -> &[u64] {
        self.share.get(worker).map_or(&[], Vec::as_slice)
    }

    /// An operator set NIC `nic`'s total capacity (the REST API's `PATCH /v1/nics`), and
    /// gave each worker an equal part of it ([`CapacityShares::equal_share`]): the shares are
    /// those from now on, and the next rounds move them by demand within the new total. A
    /// NIC left to the estimators (`capacity_bps: None`) stays so. An unknown `nic` is
    /// ignored.
    pub fn set_capacity(&mut self, nic: usize, capacity_bps: u64) {
        let workers = self.share.len();
        let Some(n) = self.nics.get_mut(nic) else {
            return;
        };
        if n.capacity_bps.is_some() {
            n.capacity_bps = Some(capacity_bps);
        }
        for share in &mut self.share {
            share[nic] = Self::equal_share(capacity_bps, workers);
        }
    }

    /// One worker's equal part of `capacity_bps` among `workers` (at least 1 bit/s), as
    /// [`CapacityShares::new`] starts with.
    #[must_use]
    pub fn equal_share(capacity_bps: u64, workers: usize) -> u64 {
        (capacity_bps / workers.max(1) as u64).max(1)
    }

    /// One round: read the workers' snapshots (in worker order, NICs in the order given to
    /// [`CapacityShares::new`], which is `NicId` order) and return the shares that changed,
    /// cuts before raises. The first call only records the counters.
    pub fn update(&mut self, snaps: &[Snapshot]) -> Vec<ShareChange> {
        let workers = self.share.len();
        let mut changes = Vec::new();
        if snaps.len() != workers {
            return changes;
        }
        // A worker that has not published since the last round would look idle: wait.
        if snaps
            .iter()
            .zip(&self.last_at)
            .any(|(s, last)| s.at.as_nanos() <= *last)
        {
            return changes;
        }
        let first = self.last_at.iter().all(|t| *t == 0);
        let n_nics = self.nics.len();
        let mut rate = vec![vec![0u64; n_nics]; workers];
        let mut queued = vec![vec![false; n_nics]; workers];
        for (w, s) in snaps.iter().enumerate() {
            let at = s.at.as_nanos();
            let dt = at.saturating_sub(self.last_at[w]);
            for (n, nic) in s.nics.iter().enumerate().take(n_nics) {
                let (bytes, packets) = (nic.engine.tx_bytes_count, nic.engine.tx_packets_count);
                let (last_bytes, last_packets) = self.last_sent[w][n];
                // In the pacer's units: each packet also costs the wire overhead.
                let wire = u128::from(bytes.saturating_sub(last_bytes))
                    + u128::from(packets.saturating_sub(last_packets))
                        * u128::from(self.nics[n].wire_overhead_bytes);
                if dt > 0 {
                    rate[w][n] = u64::try_from(wire * 8 * 1_000_000_000 / u128::from(dt))
                        .unwrap_or(u64::MAX);
                }
                let q = nic.engine.tx_queued_bytes > BUSY_QUEUE_BYTES;
                // A queue counts in two rounds in a row: one burst is not demand.
                queued[w][n] = q && self.last_queued[w][n];
                self.last_queued[w][n] = q;
                self.last_sent[w][n] = (bytes, packets);
            }
            self.last_at[w] = at;
        }
        if first || workers < 2 {
            return changes;
        }
        for n in 0..n_nics {
            let Some(c) = self.nics[n].capacity_bps else {
                continue;
            };
            let k = workers as u64;
            let floor = (c / (16 * k)).max(1);
            let asks: Vec<u64> = (0..workers)
                .map(|w| {
                    let share = self.share[w][n];
                    let busy = queued[w][n] || u128::from(rate[w][n]) * 10 >= u128::from(share) * 9;
                    if busy {
                        rate[w][n].max(share).saturating_add(c / k)
                    } else {
                        (rate[w][n].saturating_mul(5) / 4).max(floor)
                    }
                })
                .collect();
            let given: Vec<u64> = water_fill(c, &asks)
                .into_iter()
                .map(|g| g.clamp(1, c.max(1)))
                .collect();
            let resend = std::mem::take(&mut self.resend[n]);
            // All of a NIC's shares change together, or none: they always sum to at most C.
            if !resend
                && given
                    .iter()
                    .zip(&self.share)
                    .all(|(new, old)| new.abs_diff(old[n]) <= c / 64)
            {
                continue;
            }
            // Cuts first, then raises: applied in this order, the sum never exceeds C.
            let mut order: Vec<usize> = (0..workers).collect();
            order.sort_by_key(|&w| given[w] > self.share[w][n]);
            for w in order {
                let new = given[w];
                if resend || new != self.share[w][n] {
                    self.share[w][n] = new;
                    if let Some(nic) = snaps[w].nics.get(n) {
                        changes.push(ShareChange {
                            worker: w,
                            command: Command::SetNicCapacity {
                                nic: nic.id,
                                capacity_bps: new,
                            },
                        });
                    }
                }
            }
        }
        changes
    }
}

/// Max-min fair split of `total` among `asks`: the smallest asks are met in full, the rest
/// share what remains equally, and what nobody asked for is spread equally over everyone.
/// The result never sums above `total`.
fn water_fill(total: u64, asks: &[u64]) -> Vec<u64> {
    let k = asks.len() as u64;
    let mut given = vec![0u64; asks.len()];
    if k == 0 {
        return given;
    }
    let mut order: Vec<usize> = (0..asks.len()).collect();
    order.sort_by_key(|&w| asks[w]);
    let mut left = total;
    for (i, &w) in order.iter().enumerate() {
        let fair = left / (k - i as u64);
        given[w] = asks[w].min(fair);
        left -= given[w];
    }
    let spare = left / k;
    for g in &mut given {
        *g += spare;
    }
    given
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::NicSnapshot;
    use crate::transport::TransportStats;
    use braid_core::NicId;
    use braid_core::engine::{EngineStats, NicCounters};
    use braid_core::time::Instant;

    fn nic(capacity_bps: Option<u64>) -> SharedNic {
        SharedNic {
            capacity_bps,
            wire_overhead_bytes: 0,
        }
    }

    /// A snapshot at `at_ms` with these cumulative bytes sent and bytes queued on one NIC.
    fn snap(at_ms: u64, sent: u64, queued: u64) -> Snapshot {
        Snapshot {
            at: Instant::from_nanos(at_ms * 1_000_000),
            engine: EngineStats::default(),
            nics: vec![NicSnapshot {
                id: NicId(0),
                name: "n0".into(),
                engine: NicCounters {
                    tx_bytes_count: sent,
                    tx_queued_bytes: queued,
                    ..NicCounters::default()
                },
                link: None,
                transport: TransportStats::default(),
                extra: Vec::new(),
                open: true,
                admin_up: true,
                flows: 0,
                qos: Vec::new(),
            }],
            vnic_queues: Vec::new(),
            drops: Vec::new(),
            reassembly: braid_core::reassembly::ReassemblyStats::default(),
            flows: (0, 0),
            tx_unqueued: 0,
            deliver_unqueued: 0,
            turns: 0,
            steering: None,
            tunnels: Vec::new(),
            tunnel_ports: Vec::new(),
            tunnel_unqueued: 0,
            rules: crate::dataplane::RulesSnapshot::default(),
            vnic_qos: Vec::new(),
        }
    }

    /// Drive `rounds` rounds of 200 ms in which worker w sends at `min(demand[w], share)`
    /// (and has a queue when its demand exceeds its share). Returns the final shares.
    fn simulate(total: u64, demand: &[u64], rounds: usize) -> Vec<u64> {
        let mut s = CapacityShares::new(vec![nic(Some(total))], demand.len());
        let mut sent = vec![0u64; demand.len()];
        let mut t = 1_000;
        let snaps = |t, sent: &[u64], s: &CapacityShares| -> Vec<Snapshot> {
            (0..demand.len())
                .map(|w| {
                    let q = if demand[w] > s.shares(w)[0] {
                        10_000
                    } else {
                        0
                    };
                    snap(t, sent[w], q)
                })
                .collect()
        };
        assert!(
            s.update(&snaps(t, &sent, &s)).is_empty(),
            "first round records"
        );
        for _ in 0..rounds {
            for (w, b) in sent.iter_mut().enumerate() {
                let rate = demand[w].min(s.shares(w)[0]);
                *b += rate / 8 / 5; // 200 ms worth of bytes
            }
            t += 200;
            for ch in s.update(&snaps(t, &sent, &s)) {
                let Command::SetNicCapacity { capacity_bps, .. } = ch.command else {
                    panic!("only capacity changes");
                };
                assert_eq!(s.shares(ch.worker)[0], capacity_bps);
            }
            let sum: u64 = (0..demand.len()).map(|w| s.shares(w)[0]).sum();
            assert!(sum <= total, "shares {sum} above the capacity {total}");
        }
        (0..demand.len()).map(|w| s.shares(w)[0]).collect()
    }

    #[test]
    fn a_lone_busy_worker_gets_nearly_the_whole_link() {
        let shares = simulate(300_000_000, &[1_000_000_000, 0], 10);
        assert!(shares[0] >= 290_000_000, "{shares:?}");
        assert!(shares[1] >= 1, "{shares:?}");
    }

    #[test]
    fn two_busy_workers_converge_to_halves() {
        // Start from a lopsided split: worker 0 alone for a while, then worker 1 wakes up.
        let shares = simulate(300_000_000, &[1_000_000_000, 1_000_000_000], 30);
        for s in &shares {
            assert!(s.abs_diff(150_000_000) < 15_000_000, "{shares:?}");
        }
    }

    #[test]
    fn a_light_worker_keeps_what_it_uses_and_the_rest_goes_to_the_busy_one() {
        // A 20 Mbit/s feed on worker 1, bulk on worker 0.
        let shares = simulate(300_000_000, &[1_000_000_000, 20_000_000], 20);
        assert!(shares[1] >= 25_000_000, "the feed has headroom: {shares:?}");
        assert!(shares[0] >= 240_000_000, "{shares:?}");
    }

    #[test]
    fn water_filling_meets_small_asks_and_splits_the_rest() {
        assert_eq!(water_fill(300, &[10, 500]), vec![10, 290]);
        assert_eq!(water_fill(300, &[400, 500]), vec![150, 150]);
        assert_eq!(water_fill(300, &[10, 20]), vec![145, 155]);
        assert_eq!(water_fill(300, &[50, 100, 400]), vec![50, 100, 150]);
        assert!(water_fill(10, &[7, 7, 7]).iter().sum::<u64>() <= 10);
    }

    #[test]
    fn a_stale_snapshot_waits_and_an_unmanaged_nic_is_left_alone() {
        let mut s = CapacityShares::new(vec![nic(Some(300)), nic(None)], 2);
        let two = |t, sent| {
            let mut a = snap(t, sent, 10_000);
            a.nics.push(a.nics[0].clone());
            a.nics[1].id = NicId(1);
            vec![a, snap(t, 0, 0)]
        };
        assert!(s.update(&two(1_000, 0)).is_empty());
        let busy = two(1_200, 100);
        let changes = s.update(&busy);
        assert!(!changes.is_empty());
        assert!(
            changes
                .iter()
                .all(|c| matches!(c.command, Command::SetNicCapacity { nic: NicId(0), .. }))
        );
        // The same snapshots again (nobody published since): nothing moves.
        let before = (s.shares(0).to_vec(), s.shares(1).to_vec());
        assert!(s.update(&busy).is_empty());
        assert_eq!(before, (s.shares(0).to_vec(), s.shares(1).to_vec()));
    }

    /// A feed of small packets (148-byte braid packets, 42 bytes of wire overhead each that
    /// the pacer charges) next to bulk traffic: the shares settle and stay.
    #[test]
    fn small_packets_do_not_make_the_shares_flip() {
        let total = 1_000_000_000u64;
        let mut s = CapacityShares::new(
            vec![SharedNic {
                capacity_bps: Some(total),
                wire_overhead_bytes: 42,
            }],
            2,
        );
        // Wire bit/s each worker would use: bulk wants everything, the feed 77 Mbit/s.
        let demand_wire = [u64::MAX / 4, 60_000_000 * 190 / 148];
        let mut sent = [0u64; 2];
        let mut t = 1_000;
        let mk = |t, sent: &[u64; 2], s: &CapacityShares| -> Vec<Snapshot> {
            (0..2)
                .map(|w| {
                    let q = if demand_wire[w] > s.shares(w)[0] {
                        10_000
                    } else {
                        0
                    };
                    let mut sn = snap(t, sent[w], q);
                    sn.nics[0].engine.tx_packets_count = sent[w] / 148;
                    sn
                })
                .collect()
        };
        assert!(s.update(&mk(t, &sent, &s)).is_empty());
        let mut history = Vec::new();
        for _ in 0..30 {
            for (w, b) in sent.iter_mut().enumerate() {
                let wire = demand_wire[w].min(s.shares(w)[0]);
                *b += wire * 148 / 190 / 8 / 5; // 200 ms of braid bytes
            }
            t += 200;
            let n = s.update(&mk(t, &sent, &s)).len();
            history.push((s.shares(0)[0] / 1_000_000, s.shares(1)[0] / 1_000_000, n));
        }
        let moves = history.iter().skip(10).filter(|h| h.2 > 0).count();
        assert_eq!(moves, 0, "shares (Mbit/s, changes) per round: {history:?}");
        assert!(
            s.shares(1)[0] >= demand_wire[1],
            "the feed is not paced below its need: {history:?}"
        );
    }

    #[test]
    fn a_refused_share_is_sent_again_with_its_nic() {
        let mut s = CapacityShares::new(vec![nic(Some(300))], 2);
        assert!(
            s.update(&[snap(1_000, 0, 10_000), snap(1_000, 0, 0)])
                .is_empty()
        );
        let changes = s.update(&[snap(1_200, 100, 10_000), snap(1_200, 0, 0)]);
        assert_eq!(changes.len(), 2);
        // Cuts first: worker 1 goes down before worker 0 goes up.
        assert_eq!(changes[0].worker, 1);
        s.refused(&changes[0]);
        // Nothing moved since, yet both shares of the NIC go out again.
        let again = s.update(&[snap(1_400, 200, 10_000), snap(1_400, 0, 0)]);
        assert_eq!(again.len(), 2, "{again:?}");
    }

    /// An operator's new capacity: equal shares of it at once, the rounds then move them
    /// within the new total (never above it); a NIC left to the estimators stays so.
    #[test]
    fn a_new_capacity_is_split_equally_and_then_by_demand() {
        let mut s = CapacityShares::new(vec![nic(Some(300)), nic(None)], 2);
        s.set_capacity(0, 1_000);
        s.set_capacity(1, 50);
        s.set_capacity(7, 50);
        assert_eq!((s.shares(0), s.shares(1)), (&[500, 25][..], &[500, 25][..]));
        assert_eq!(s.nics[0].capacity_bps, Some(1_000));
        assert_eq!(s.nics[1].capacity_bps, None, "still the estimators'");
        assert_eq!(CapacityShares::equal_share(1, 3), 1, "never zero");
        assert!(
            s.update(&[snap(1_000, 0, 10_000), snap(1_000, 0, 0)])
                .is_empty()
        );
        let changes = s.update(&[snap(1_200, 100, 10_000), snap(1_200, 0, 0)]);
        assert_eq!(changes.len(), 2, "the busy worker's ask moves both");
        assert!(s.shares(0)[0] > 500 && s.shares(0)[0] + s.shares(1)[0] <= 1_000);
    }

    #[test]
    fn idle_workers_split_the_link_evenly() {
        let shares = simulate(300_000_000, &[0, 0, 0], 5);
        for s in &shares {
            assert!(s.abs_diff(100_000_000) < 5_000_000, "{shares:?}");
        }
    }
}
