//! A simulated shell drives every state machine of the crate over small segment files, with
//! page cache and disk kept apart, and crashes at random points (losing what was not synced,
//! or keeping a prefix of it). After each crash, `restore` must bring back exactly the records
//! that survived: every durable message, no settled one, no msg_id reused, no duplicate
//! accepted. A seed reproduces a run.

use std::collections::{BTreeMap, BTreeSet};

use mesh_wal::commit::{Action, CommitConfig, Durability, Instant};
use mesh_wal::dedup::{DedupConfig, Verdict};
use mesh_wal::msg_id::{MsgIdConfig, MsgIdError};
use mesh_wal::record::{self, Body, Entry, MsgKey};
use mesh_wal::recovery::{ReplayEvent, TailPolicy};
use mesh_wal::restore::{Restored, WalConfig, restore};
use mesh_wal::segments::{Relocate, SegmentConfig};
use mesh_wal::writer::{AppendError, Appended, WriterConfig};
use proptest::prelude::*;

const SLOTS: usize = 6;
const SEGMENT_LEN: usize = 4096;
const NODE: u64 = 1;

fn config(durability: Durability) -> WalConfig {
    WalConfig {
        writer: WriterConfig {
            segment_len: SEGMENT_LEN,
            record_body_len_max: 512,
            log_id: 0,
        },
        commit: CommitConfig {
            durability,
            group_bytes_max: 1024,
            sync_deadline_us: 200,
            groups_pending_max: 4,
        },
        segments: SegmentConfig {
            segments_max: SLOTS,
            entries_max: 256,
            relocate_at_segments: 4,
            hash_seed: 3,
        },
        dedup: DedupConfig {
            sources_max: 8,
            window_len: 64,
            hash_seed: 4,
        },
        msg_id: MsgIdConfig {
            partition: 0,
            block_len: 8,
        },
        ..WalConfig::new(0)
    }
}

/// splitmix64: the run's only source of randomness.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// What the log holds, as the model sees it: records by seq.
#[derive(Default)]
struct Model {
    sent: BTreeMap<u64, u64>,
    delivered: BTreeMap<u64, u64>,
    inbound: BTreeMap<(u64, u64), u64>,
    acked: BTreeMap<(u64, u64), u64>,
    next_inbound_id: BTreeMap<u64, u64>,
    max_msg_id: u64,
    durable_seq: u64,
}

impl Model {
    /// Forgets records past `last_seq` (lost in a crash).
    fn crash(&mut self, last_seq: u64) {
        self.sent.retain(|_, seq| *seq <= last_seq);
        self.delivered.retain(|_, seq| *seq <= last_seq);
        self.inbound.retain(|_, seq| *seq <= last_seq);
        self.acked.retain(|_, seq| *seq <= last_seq);
    }

    fn unsettled_outbound(&self) -> BTreeSet<u64> {
        self.sent
            .keys()
            .filter(|id| !self.delivered.contains_key(id))
            .copied()
            .collect()
    }

    fn unsettled_inbound(&self) -> BTreeSet<(u64, u64)> {
        self.inbound
            .keys()
            .filter(|key| !self.acked.contains_key(key))
            .copied()
            .collect()
    }
}

struct Shell {
    config: WalConfig,
    /// Page cache: what the mappings show.
    mem: Vec<Vec<u8>>,
    /// Stable storage: what survives a crash.
    disk: Vec<Vec<u8>>,
    slot_of: BTreeMap<u64, usize>,
    free: Vec<usize>,
    wal: Restored,
    in_flight: Option<(u64, u64)>,
    now: u64,
    model: Model,
}

fn two_mut(files: &mut [Vec<u8>], a: usize, b: usize) -> (&mut [u8], &mut [u8]) {
    assert_ne!(a, b);
    if a < b {
        let (left, right) = files.split_at_mut(b);
        (&mut left[a], &mut right[0])
    } else {
        let (left, right) = files.split_at_mut(a);
        (&mut right[0], &mut left[b])
    }
}

impl Shell {
    fn boot(config: WalConfig, disk: Vec<Vec<u8>>, model: Model) -> Self {
        let images: Vec<&[u8]> = disk.iter().map(Vec::as_slice).collect();
        let wal = restore(&images, &config).expect("restore after a crash");
        let mut shell = Self {
            config,
            mem: disk.clone(),
            disk,
            slot_of: BTreeMap::new(),
            free: Vec::new(),
            wal,
            in_flight: None,
            now: 0,
            model,
        };
        let recovered = shell.wal.recovered.clone();
        for slot in recovered.recycle_slots.iter().chain(&recovered.free_slots) {
            shell.mem[*slot][..record::SEGMENT_HEADER_LEN].fill(0);
            shell.disk[*slot][..record::SEGMENT_HEADER_LEN].fill(0);
            shell.free.push(*slot);
        }
        for live in &recovered.live {
            shell.slot_of.insert(live.segment_id, live.slot);
        }
        shell.model.crash(recovered.next_seq - 1);
        shell.model.durable_seq = recovered.next_seq - 1;
        shell
    }

    fn check_against_model(&self) {
        let images: Vec<&[u8]> = self.disk.iter().map(Vec::as_slice).collect();
        let mut outbound = BTreeSet::new();
        let mut inbound = BTreeSet::new();
        for event in self.wal.recovered.replay(&images) {
            if let ReplayEvent::Record { record, .. } = event {
                match record.body {
                    Body::Message { key, .. } => {
                        outbound.insert(key.msg_id);
                    }
                    Body::Delivered { key } => {
                        outbound.remove(&key.msg_id);
                    }
                    Body::Inbound { key, .. } => {
                        inbound.insert((key.src_node, key.msg_id));
                    }
                    Body::Acked { key } => {
                        inbound.remove(&(key.src_node, key.msg_id));
                    }
                    _ => {}
                }
            }
        }
        assert_eq!(
            outbound,
            self.model.unsettled_outbound(),
            "unsettled messages"
        );
        assert_eq!(inbound, self.model.unsettled_inbound(), "unsettled inbound");
        assert_eq!(
            self.wal.segments.unsettled(),
            outbound.len() + inbound.len()
        );
        for &(src, id) in self.model.inbound.keys() {
            assert_ne!(
                self.wal.dedup.check(src, id),
                Verdict::New,
                "dedup forgot {src}/{id}"
            );
        }
    }

    /// Appends `body`, rolling when needed. `None` when the log is full (backpressure).
    fn append(&mut self, body: &Body<'_>) -> Option<Appended> {
        for _ in 0..4 {
            let synced = self.wal.commit.synced_seq();
            let result = match self.wal.writer.active_segment_id() {
                Some(id) => {
                    let slot = self.slot_of[&id];
                    self.wal.writer.append(&mut self.mem[slot], body, synced)
                }
                None => self.wal.writer.append(&mut [], body, synced),
            };
            match result {
                Ok(appended) => {
                    let now = Instant::from_micros(self.now);
                    self.wal.commit.handle_append(&appended, now).unwrap();
                    self.wal
                        .segments
                        .handle_record(appended.segment_id, appended.offset, appended.seq, body)
                        .unwrap();
                    return Some(appended);
                }
                Err(AppendError::NeedRoll { .. }) => {
                    if !self.roll() {
                        return None;
                    }
                }
                Err(other) => panic!("append: {other}"),
            }
        }
        None
    }

    fn roll(&mut self) -> bool {
        self.service(true);
        if !self.wal.commit.can_roll() || !self.wal.segments.can_open() {
            return false;
        }
        let Some(new_slot) = self.free.pop() else {
            return false;
        };
        let synced = self.wal.commit.synced_seq();
        let now = self.now;
        let rolled = match self.wal.writer.active_segment_id() {
            Some(id) => {
                let (closing, opening) = two_mut(&mut self.mem, self.slot_of[&id], new_slot);
                self.wal.writer.roll(Some(closing), opening, now, synced)
            }
            None => self
                .wal
                .writer
                .roll(None, &mut self.mem[new_slot], now, synced),
        }
        .unwrap();
        if let Some(sealed) = rolled.sealed {
            self.wal
                .commit
                .handle_seal(
                    sealed.segment_id,
                    sealed.end_offset,
                    Instant::from_micros(now),
                )
                .unwrap();
        }
        self.wal
            .segments
            .handle_segment_opened(rolled.segment_id)
            .unwrap();
        self.slot_of.insert(rolled.segment_id, new_slot);
        true
    }

    /// Runs the shell's loop once: syncs (completed if `complete`), durability, recycling.
    fn service(&mut self, complete: bool) {
        let now = Instant::from_micros(self.now);
        self.wal.commit.handle_timeout(now);
        for _ in 0..8 {
            if self.in_flight.is_none()
                && let Some(Action::Sync {
                    sync_id,
                    segment_id,
                    ..
                }) = self.wal.commit.poll_action()
            {
                self.in_flight = Some((sync_id, segment_id));
            }
            if complete && let Some((sync_id, segment_id)) = self.in_flight.take() {
                let slot = self.slot_of[&segment_id];
                self.disk[slot].clone_from(&self.mem[slot]);
                self.wal.commit.handle_sync_done(sync_id, now).unwrap();
            }
            if let Some(durable) = self.wal.commit.poll_durable() {
                self.model.durable_seq = durable;
                self.wal.segments.handle_durable(durable);
                self.wal.msg_ids.handle_durable(durable);
            }
            while let Some(segment_id) = self.wal.segments.poll_recycle() {
                let slot = self.slot_of.remove(&segment_id).unwrap();
                self.mem[slot][..record::SEGMENT_HEADER_LEN].fill(0);
                self.disk[slot][..record::SEGMENT_HEADER_LEN].fill(0);
                self.wal.segments.handle_recycled(segment_id).unwrap();
                self.free.push(slot);
            }
            if self.in_flight.is_none() || !complete {
                break;
            }
        }
    }

    fn relocate(&mut self) {
        let Some(relocate) = self.wal.segments.poll_relocate() else {
            return;
        };
        let (kind, bytes) = match relocate {
            Relocate::CopyRecord { segment_id, offset } => {
                let slot = self.slot_of[&segment_id];
                let (entry, _) = record::decode_at(&self.mem[slot], offset, segment_id).unwrap();
                let Entry::Data(old) = entry else {
                    panic!("relocating a non-data record")
                };
                let view = record::RecordView::new_checked(&self.mem[slot][offset..]).unwrap();
                (old.body.kind(), view.body().to_vec())
            }
            Relocate::WriteDedupCheckpoint => {
                let mut bytes = Vec::new();
                self.wal.dedup.encode_snapshot(&mut bytes);
                (record::RecordKind::DedupCheckpoint, bytes)
            }
        };
        let body = Body::parse(kind, &bytes).unwrap();
        self.append(&body);
    }

    fn send(&mut self, rng: &mut Rng) {
        let mut allocated = None;
        for _ in 0..16 {
            match self.wal.msg_ids.allocate() {
                Ok(id) => {
                    allocated = Some(id);
                    break;
                }
                Err(MsgIdError::NoneReserved { .. }) => {
                    if let Some(reservation) = self.wal.msg_ids.poll_reservation() {
                        let Some(appended) = self.append(&Body::MsgIdReservation(reservation))
                        else {
                            return;
                        };
                        self.wal
                            .msg_ids
                            .handle_reservation_appended(reservation, appended.seq)
                            .unwrap();
                    }
                    self.now += 300;
                    self.service(true);
                }
                Err(other) => panic!("{other}"),
            }
        }
        let Some(id) = allocated else {
            return;
        };
        assert!(id > self.model.max_msg_id, "msg_id {id} reused");
        self.model.max_msg_id = id;
        let frame = vec![u8::try_from(id % 251).unwrap(); usize::try_from(rng.below(200)).unwrap()];
        let key = MsgKey {
            src_node: NODE,
            msg_id: id,
        };
        if let Some(appended) = self.append(&Body::Message { key, frame: &frame }) {
            self.model.sent.insert(id, appended.seq);
        }
    }

    fn receive(&mut self, rng: &mut Rng) {
        let src = 2 + rng.below(3);
        let next = self.model.next_inbound_id.entry(src).or_insert(1);
        // Mostly new ids, sometimes a retransmission of a recent one.
        let id = if rng.below(4) == 0 && *next > 3 {
            *next - 1 - rng.below(3)
        } else {
            *next += 1;
            *next - 1
        };
        let verdict = self.wal.dedup.check_and_insert(src, id).unwrap();
        let key = MsgKey {
            src_node: src,
            msg_id: id,
        };
        if verdict == Verdict::New {
            assert!(
                !self.model.inbound.contains_key(&(src, id)),
                "duplicate accepted"
            );
            if let Some(appended) = self.append(&Body::Inbound {
                key,
                frame: b"payload",
            }) {
                self.model.inbound.insert((src, id), appended.seq);
            }
        }
    }

    fn settle(&mut self, rng: &mut Rng) {
        if rng.below(2) == 0 {
            let open: Vec<u64> = self.model.unsettled_outbound().into_iter().collect();
            if open.is_empty() {
                return;
            }
            let id = open[usize::try_from(rng.below(open.len() as u64)).unwrap()];
            let key = MsgKey {
                src_node: NODE,
                msg_id: id,
            };
            if let Some(appended) = self.append(&Body::Delivered { key }) {
                self.model.delivered.insert(id, appended.seq);
            }
        } else {
            let open: Vec<(u64, u64)> = self.model.unsettled_inbound().into_iter().collect();
            if open.is_empty() {
                return;
            }
            let (src, id) = open[usize::try_from(rng.below(open.len() as u64)).unwrap()];
            let key = MsgKey {
                src_node: src,
                msg_id: id,
            };
            if let Some(appended) = self.append(&Body::Acked { key }) {
                self.model.acked.insert((src, id), appended.seq);
            }
        }
    }

    /// Power loss: the disk keeps what was synced, plus some of what the page cache held and
    /// the kernel wrote back early, in whole 512-byte sectors (a device does not tear one).
    /// With `holes`, any sectors of any file (holes in unsynced data, newer segments before
    /// older ones); without, a prefix of the unsynced data in log order (no holes).
    fn crash(self, rng: &mut Rng, holes: bool) -> (Vec<Vec<u8>>, Model) {
        let mut disk = self.disk;
        let unsynced: Vec<usize> = self
            .slot_of
            .values()
            .copied()
            .filter(|&slot| disk[slot] != self.mem[slot])
            .collect();
        let sectors = SEGMENT_LEN / 512;
        if holes {
            for &slot in &unsynced {
                for sector in 0..sectors {
                    if rng.below(3) == 0 {
                        let range = sector * 512..(sector + 1) * 512;
                        disk[slot][range.clone()].copy_from_slice(&self.mem[slot][range]);
                    }
                }
            }
        } else if !unsynced.is_empty() {
            // slot_of is ordered by segment id, which is log order.
            let last = usize::try_from(rng.below(unsynced.len() as u64)).unwrap();
            for (index, &slot) in unsynced.iter().enumerate().take(last + 1) {
                let cut = if index == last {
                    usize::try_from(rng.below(sectors as u64 + 1)).unwrap() * 512
                } else {
                    SEGMENT_LEN
                };
                disk[slot][..cut].copy_from_slice(&self.mem[slot][..cut]);
            }
        }
        (disk, self.model)
    }
}

fn run(seed: u64, durability: Durability, policy: TailPolicy, steps: usize) -> usize {
    let mut rng = Rng(seed);
    let config = WalConfig {
        policy,
        ..config(durability)
    };
    let mut shell = Shell::boot(
        config,
        vec![vec![0u8; SEGMENT_LEN]; SLOTS],
        Model::default(),
    );
    let mut truncations = 0;
    for step in 0..steps {
        match rng.below(100) {
            0..=29 => shell.send(&mut rng),
            30..=49 => shell.receive(&mut rng),
            50..=79 => shell.settle(&mut rng),
            80..=89 => {
                shell.now += rng.below(400);
                let complete = rng.below(3) != 0;
                shell.service(complete);
            }
            90..=96 => shell.relocate(),
            _ => {
                let durable = shell.model.durable_seq;
                let config = shell.config;
                let (disk, model) = shell.crash(&mut rng, policy == TailPolicy::TruncateUnsynced);
                shell = Shell::boot(config, disk, model);
                assert!(
                    shell.wal.recovered.next_seq > durable,
                    "seed {seed} step {step}: durable seq {durable} lost"
                );
                truncations += usize::from(shell.wal.recovered.truncated.is_some());
                shell.check_against_model();
            }
        }
    }
    truncations
}

#[test]
fn batch_survives_crashes() {
    for seed in 0..12 {
        run(seed, Durability::Batch, TailPolicy::Strict, 400);
    }
}

#[test]
fn always_survives_crashes() {
    for seed in 100..106 {
        run(seed, Durability::Always, TailPolicy::Strict, 300);
    }
}

#[test]
fn holes_in_unsynced_data_are_truncated_under_truncate_unsynced() {
    let truncations: usize = (200..212)
        .map(|seed| run(seed, Durability::Batch, TailPolicy::TruncateUnsynced, 400))
        .sum();
    assert!(truncations > 0, "the runs never tore anything");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]

    #[test]
    fn random_runs_survive_crashes(seed in any::<u64>(), holes in any::<bool>()) {
        let policy = if holes { TailPolicy::TruncateUnsynced } else { TailPolicy::Strict };
        run(seed, Durability::Batch, policy, 300);
    }
}
