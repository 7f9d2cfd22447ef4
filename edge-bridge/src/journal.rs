//! The on-disk journal of upstream events: every event is appended (and flushed) before it is sent, and stays
//! until the cloud acknowledges it, so events survive a lost link and a restart. The first line holds the next
//! sequence number, so numbers are never reused even when every event has been acknowledged.
//!
//! Acknowledged events leave memory at once but the file only when it is rewritten: when nothing is pending, or
//! once the acknowledged lines are at least as many as the pending ones (and 1,024) — so draining a long offline
//! backlog one acknowledgement at a time costs linear, not quadratic, disk work. An acknowledged event that is
//! still on disk when the bridge restarts is acknowledged again by the cloud's `welcome` (its `last_seq`).

use std::io::Write;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use switchyard_edge_protocol::{encode, Event, Up, MAX_FRAME_BYTES};
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub seq: u64,
    pub occurred_at: DateTime<Utc>,
    pub station_id: Option<Uuid>,
    pub event: Event,
}

impl Entry {
    pub fn frame(&self) -> Up {
        Up::Event {
            seq: self.seq,
            occurred_at: self.occurred_at,
            station_id: self.station_id,
            event: self.event.clone(),
        }
    }
}

#[derive(Serialize, Deserialize)]
struct Header {
    next_seq: u64,
    /// Made here and never welcomed by the cloud yet: none of its events can have reached it. A header from before
    /// this field, or a copy of a journal that was welcomed, reads as not fresh.
    #[serde(default)]
    fresh: bool,
}

pub struct Journal {
    path: PathBuf,
    next_seq: u64,
    pending: Vec<Entry>,
    /// Acknowledged events still in the file.
    stale: usize,
    /// Times the file was rewritten (for the tests).
    rewrites: usize,
    /// A write failed part way and could not be cut back: the next line starts with a newline.
    torn: bool,
    /// See [`Header`]'s `fresh`.
    fresh: bool,
}

/// Fewest acknowledged lines worth a rewrite while events are pending.
const COMPACT_AFTER: usize = 1024;

impl Journal {
    /// Opens (or creates) the journal at `path`.
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        let mut journal = Self {
            path: path.to_owned(),
            next_seq: 1,
            pending: Vec::new(),
            stale: 0,
            rewrites: 0,
            torn: false,
            fresh: false,
        };
        // Bytes, not text: a line torn inside a character is not valid UTF-8, and must not stop the bridge.
        match std::fs::read(path) {
            Ok(bytes) => {
                let mut lines = bytes.split(|b| *b == b'\n');
                if let Some(header) = lines.next() {
                    let header: Header = serde_json::from_slice(header)?;
                    journal.next_seq = header.next_seq;
                    journal.fresh = header.fresh;
                }
                let mut unreadable = 0;
                for line in lines.filter(|l| !l.trim_ascii().is_empty()) {
                    match serde_json::from_slice::<Entry>(line) {
                        Ok(entry) => {
                            journal.next_seq = journal.next_seq.max(entry.seq + 1);
                            journal.pending.push(entry);
                        }
                        Err(_) => unreadable += 1,
                    }
                }
                journal.mend_tail(&bytes)?;
                if unreadable > 0 {
                    tracing::warn!(
                        lines = unreadable,
                        path = %path.display(),
                        "journal lines that cannot be read were left out (a torn last line, or damage)"
                    );
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                journal.fresh = true;
                journal.rewrite()?;
            }
            Err(e) => return Err(e.into()),
        }
        Ok(journal)
    }

    /// Appends an event that happened at `occurred_at` (by the cloud's clock) with the next sequence number and
    /// returns it. An event too large for a tunnel frame is refused: kept, it would stop every event behind it.
    pub fn append(
        &mut self,
        station_id: Option<Uuid>,
        occurred_at: DateTime<Utc>,
        event: Event,
    ) -> anyhow::Result<Entry> {
        let entry = Entry {
            seq: self.next_seq,
            occurred_at,
            station_id,
            event,
        };
        if encode(entry.frame()).len() > MAX_FRAME_BYTES {
            anyhow::bail!("the event is larger than a tunnel frame ({MAX_FRAME_BYTES} bytes)");
        }
        let mut line = serde_json::to_string(&entry)?;
        line.push('\n');
        let mut file = std::fs::OpenOptions::new().append(true).open(&self.path)?;
        let length = file.metadata()?.len();
        // The line in one write; should it fail part way (a full disk), the file is cut back to where it was, so
        // that the next line does not join a torn one; if even that fails, the next line starts with a newline.
        if self.torn {
            line.insert(0, '\n');
        }
        if let Err(e) = file
            .write_all(line.as_bytes())
            .and_then(|()| file.sync_data())
        {
            self.torn = file.set_len(length).is_err() || self.torn;
            return Err(e.into());
        }
        self.torn = false;
        self.next_seq += 1;
        self.pending.push(entry.clone());
        Ok(entry)
    }

    /// A last line without its newline (the power went mid-write): a complete event is kept and its newline
    /// written; a torn one is cut off. Either way the next line appended starts a line of its own (before, it
    /// joined the torn one and both were lost at the next start).
    fn mend_tail(&self, bytes: &[u8]) -> anyhow::Result<()> {
        if bytes.is_empty() || bytes.ends_with(b"\n") {
            return Ok(());
        }
        let start = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        let tail = &bytes[start..];
        let file = std::fs::OpenOptions::new().append(true).open(&self.path)?;
        if start > 0 && serde_json::from_slice::<Entry>(tail).is_ok() {
            (&file).write_all(b"\n")?;
        } else if start > 0 {
            file.set_len(start as u64)?;
        } else {
            // The header itself is unterminated (it was read above, so it is whole).
            (&file).write_all(b"\n")?;
        }
        file.sync_data()?;
        Ok(())
    }

    /// The cloud has every event up to `seq`: forget them.
    pub fn ack(&mut self, seq: u64) -> anyhow::Result<()> {
        let before = self.pending.len();
        self.pending.retain(|e| e.seq > seq);
        self.stale += before - self.pending.len();
        if self.stale > 0
            && (self.pending.is_empty() || self.stale >= COMPACT_AFTER.max(self.pending.len()))
        {
            self.rewrite()?;
        }
        Ok(())
    }

    /// The cloud's welcome: it has recorded every event up to `last_seq`, which are acknowledged, and numbering
    /// goes on above it. A journal made here and never welcomed before (a box re-imaged with the same token, the
    /// file deleted) cannot have sent any of its events: they are numbered again from `last_seq + 1`, in order,
    /// rather than taken for recorded and forgotten. A journal that was welcomed before, or restored from a copy,
    /// is acknowledged as the cloud says (its events may have been recorded without the acknowledgement arriving,
    /// and numbered again they would be applied twice). Returns whether it was renumbered.
    pub fn welcome(&mut self, last_seq: u64) -> anyhow::Result<bool> {
        if !self.fresh {
            if self.next_seq <= last_seq {
                let dropped = self.pending.iter().filter(|e| e.seq <= last_seq).count();
                if dropped > 0 {
                    tracing::warn!(
                        events = dropped,
                        last_seq,
                        "the cloud has recorded this bridge's events beyond this journal's numbering (a journal from another box or an old copy?): its events up to there are taken for recorded"
                    );
                }
            }
            self.ack(last_seq)?;
            if self.next_seq <= last_seq {
                self.next_seq = last_seq + 1;
                self.rewrite()?;
            }
            return Ok(false);
        }
        if !self.pending.is_empty() && last_seq > 0 {
            tracing::warn!(
                events = self.pending.len(),
                from = last_seq + 1,
                "a new journal meets a cloud that has recorded this bridge's events before (re-imaged?): its events are numbered above them"
            );
        }
        let before = (self.pending.clone(), self.next_seq);
        for (entry, seq) in self.pending.iter_mut().zip(last_seq + 1..) {
            entry.seq = seq;
        }
        self.next_seq = self.next_seq.max(last_seq + 1 + self.pending.len() as u64);
        self.fresh = false;
        // On disk first: should the write fail, nothing changed, and the journal is still fresh with its old numbers
        // (sent under the new ones and renumbered again after a restart, its events would be applied twice).
        if let Err(e) = self.rewrite() {
            (self.pending, self.next_seq) = before;
            self.fresh = true;
            return Err(e);
        }
        Ok(true)
    }

    /// The session the bridge ended at its planned end on `station` and has not yet told the cloud about.
    pub fn ended_unacknowledged(&self, station: Uuid) -> Option<Uuid> {
        self.pending.iter().rev().find_map(|e| match &e.event {
            Event::Switched {
                on: false,
                reason,
                session_id,
            } if e.station_id == Some(station) && reason == "planned_end" => *session_id,
            _ => None,
        })
    }

    pub fn pending(&self) -> &[Entry] {
        &self.pending
    }

    fn rewrite(&mut self) -> anyhow::Result<()> {
        self.stale = 0;
        self.rewrites += 1;
        let tmp = self.path.with_extension("tmp");
        let mut file = std::fs::File::create(&tmp)?;
        writeln!(
            file,
            "{}",
            serde_json::to_string(&Header {
                next_seq: self.next_seq,
                fresh: self.fresh,
            })?
        )?;
        for entry in &self.pending {
            writeln!(file, "{}", serde_json::to_string(entry)?)?;
        }
        file.sync_all()?;
        std::fs::rename(&tmp, &self.path)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn switched(on: bool) -> Event {
        Event::Switched {
            on,
            reason: "test".into(),
            session_id: None,
        }
    }

    #[test]
    fn events_survive_a_reopen_until_acknowledged_and_numbers_are_never_reused(
    ) -> anyhow::Result<()> {
        let dir = std::env::temp_dir().join(format!("edge-journal-{}", Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir)?;
        let path = dir.join("journal.jsonl");
        let mut journal = Journal::open(&path)?;
        assert_eq!(journal.append(None, Utc::now(), switched(true))?.seq, 1);
        assert_eq!(journal.append(None, Utc::now(), switched(false))?.seq, 2);
        assert_eq!(journal.append(None, Utc::now(), switched(true))?.seq, 3);
        drop(journal);

        let mut journal = Journal::open(&path)?;
        assert_eq!(
            journal.pending().iter().map(|e| e.seq).collect::<Vec<_>>(),
            [1, 2, 3]
        );
        journal.ack(2)?;
        assert_eq!(
            journal.pending().iter().map(|e| e.seq).collect::<Vec<_>>(),
            [3]
        );
        journal.ack(3)?;
        drop(journal);

        let mut journal = Journal::open(&path)?;
        assert!(journal.pending().is_empty());
        assert_eq!(
            journal.append(None, Utc::now(), switched(false))?.seq,
            4,
            "not reused after a full ack"
        );
        // The first welcome of a journal made here: its event is numbered above what the cloud has.
        assert!(journal.welcome(9)?);
        assert_eq!(journal.pending()[0].seq, 10);
        assert_eq!(journal.append(None, Utc::now(), switched(false))?.seq, 11);
        // A torn last line is dropped, the rest kept.
        drop(journal);
        let mut file = std::fs::OpenOptions::new().append(true).open(&path)?;
        write!(file, "{{\"seq\": 12, \"occ")?;
        let mut journal = Journal::open(&path)?;
        assert_eq!(
            journal.pending().iter().map(|e| e.seq).collect::<Vec<_>>(),
            [10, 11]
        );
        // The torn line is cut off: the next event is a line of its own and survives the next start.
        assert_eq!(journal.append(None, Utc::now(), switched(true))?.seq, 12);
        drop(journal);
        let journal = Journal::open(&path)?;
        assert_eq!(
            journal.pending().iter().map(|e| e.seq).collect::<Vec<_>>(),
            [10, 11, 12]
        );
        drop(journal);
        // A line torn inside a character (not valid UTF-8) is cut off as well, and the bridge starts.
        let mut file = std::fs::OpenOptions::new().append(true).open(&path)?;
        file.write_all(b"{\"seq\": 13, \"reason\": \"caf\xc3")?;
        drop(file);
        let journal = Journal::open(&path)?;
        assert_eq!(
            journal.pending().iter().map(|e| e.seq).collect::<Vec<_>>(),
            [10, 11, 12]
        );
        drop(journal);
        // A complete last line whose newline never made it to the disk is kept.
        let text = std::fs::read_to_string(&path)?;
        std::fs::write(&path, text.trim_end_matches('\n'))?;
        let mut journal = Journal::open(&path)?;
        assert_eq!(journal.append(None, Utc::now(), switched(false))?.seq, 13);
        drop(journal);
        assert_eq!(
            Journal::open(&path)?
                .pending()
                .iter()
                .map(|e| e.seq)
                .collect::<Vec<_>>(),
            [10, 11, 12, 13]
        );
        std::fs::remove_dir_all(&dir)?;
        Ok(())
    }

    #[test]
    fn an_event_too_large_for_a_frame_is_refused_and_the_numbering_goes_on() -> anyhow::Result<()> {
        let path =
            std::env::temp_dir().join(format!("edge-journal-{}.jsonl", Uuid::new_v4().simple()));
        let mut journal = Journal::open(&path)?;
        let huge = Event::Ocpp {
            charge_point_id: "CP-1".into(),
            subprotocol: "ocpp1.6".into(),
            action: "DataTransfer".into(),
            payload: serde_json::json!({ "data": "x".repeat(MAX_FRAME_BYTES) }),
            transaction_id: None,
        };
        assert!(journal.append(None, Utc::now(), huge).is_err());
        assert_eq!(journal.append(None, Utc::now(), switched(true))?.seq, 1);
        drop(journal);
        let journal = Journal::open(&path)?;
        assert_eq!(
            journal.pending().iter().map(|e| e.seq).collect::<Vec<_>>(),
            [1]
        );
        std::fs::remove_file(&path)?;
        Ok(())
    }

    #[test]
    fn draining_a_long_backlog_one_ack_at_a_time_rewrites_the_file_a_few_times_only(
    ) -> anyhow::Result<()> {
        let path =
            std::env::temp_dir().join(format!("edge-journal-{}.jsonl", Uuid::new_v4().simple()));
        let mut journal = Journal::open(&path)?;
        for _ in 0..5_000 {
            journal.append(None, Utc::now(), switched(false))?;
        }
        let before = journal.rewrites;
        for seq in 1..=2_600 {
            journal.ack(seq)?;
        }
        // Half acknowledged: the file was compacted once; a restart now resends only what the rewrite kept.
        assert_eq!(journal.rewrites - before, 1);
        drop(journal);
        let mut journal = Journal::open(&path)?;
        let first = journal.pending().first().map(|e| e.seq);
        assert!(first.is_some_and(|s| s > 2_000 && s <= 2_601), "{first:?}");
        journal.ack(2_600)?; // the cloud's welcome
        assert_eq!(journal.pending().first().map(|e| e.seq), Some(2_601));
        for seq in 2_601..=5_000 {
            journal.ack(seq)?;
        }
        assert!(journal.pending().is_empty());
        assert!(journal.rewrites <= 4, "{} rewrites", journal.rewrites);
        drop(journal);
        assert!(Journal::open(&path)?.pending().is_empty());
        assert_eq!(
            Journal::open(&path)?
                .append(None, Utc::now(), switched(true))?
                .seq,
            5_001
        );
        std::fs::remove_file(&path)?;
        Ok(())
    }

    /// A new journal (a box re-imaged with the same token) numbers from 1 while the cloud has recorded up to 100:
    /// at its first welcome its events are numbered from 101, not acknowledged away; a journal welcomed before is
    /// acknowledged as the cloud says.
    #[test]
    fn a_journal_that_lost_its_numbering_numbers_its_events_above_the_clouds() -> anyhow::Result<()>
    {
        let path =
            std::env::temp_dir().join(format!("edge-journal-{}.jsonl", Uuid::new_v4().simple()));
        let mut journal = Journal::open(&path)?;
        for on in [true, false, true] {
            journal.append(None, Utc::now(), switched(on))?;
        }
        assert!(journal.welcome(100)?);
        let seqs = |j: &Journal| j.pending().iter().map(|e| e.seq).collect::<Vec<_>>();
        assert_eq!(seqs(&journal), [101, 102, 103]);
        assert_eq!(journal.append(None, Utc::now(), switched(false))?.seq, 104);
        drop(journal);
        let mut journal = Journal::open(&path)?;
        assert_eq!(seqs(&journal), [101, 102, 103, 104], "kept on disk");
        assert!(!journal.welcome(102)?);
        assert_eq!(seqs(&journal), [103, 104]);
        // Welcomed before (or restored from a copy, or from before the flag): what the cloud says it has is
        // acknowledged, never sent again under new numbers.
        assert!(!journal.welcome(200)?);
        assert!(journal.pending().is_empty());
        assert_eq!(journal.append(None, Utc::now(), switched(true))?.seq, 201);
        std::fs::remove_file(&path)?;
        Ok(())
    }
}
