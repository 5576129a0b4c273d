//! Why a task is where it is, as codes: a task's note is part of the ledger's state (hashed
//! into the state root), so it holds a typed reason with its numbers, and the words are
//! rendered at the edge (`Display`). Rewording a message is not a consensus change; adding or
//! renumbering a variant is.

use serde::Serialize;

/// Why the runs of a task decided nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "code", rename_all = "snake_case")]
pub enum Undecided {
    /// More runs than the comparison handles.
    TooManyRuns {
        /// Runs revealed.
        runs: u32,
    },
    /// Two largest groups of agreeing runs take different sides of the executor's result.
    TwoGroups {
        /// Runs in each group.
        group: u32,
        /// Seats (executor and council).
        seats: u32,
    },
    /// The largest group of agreeing runs is no clear majority.
    NoClearMajority {
        /// Runs in the largest group.
        largest: u32,
        /// Seats (executor and council).
        seats: u32,
        /// Seats that revealed nothing.
        silent: u32,
    },
    /// The council was to grow, but too few providers of distinct owners were eligible.
    CannotEnlarge {},
}

gridwork_types::codec_enum!(Undecided, "undecided reason" {
    0 => TooManyRuns { runs: u32 },
    1 => TwoGroups { group: u32, seats: u32 },
    2 => NoClearMajority { largest: u32, seats: u32, silent: u32 },
    3 => CannotEnlarge {},
});

impl std::fmt::Display for Undecided {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Undecided::TooManyRuns { runs } => {
                write!(f, "{runs} runs are more than can be compared")
            }
            Undecided::TwoGroups { group, seats } => write!(
                f,
                "two groups of {group} agreeing runs (of {seats} seats) disagree about the executor's result"
            ),
            Undecided::NoClearMajority {
                largest,
                seats,
                silent,
            } => write!(
                f,
                "the largest group of agreeing runs has {largest} of {seats} seats ({silent} silent); a clear majority needs at least two runs, two thirds of the seats and more than half of the council"
            ),
            Undecided::CannotEnlarge {} => f.write_str(
                "too few eligible providers of distinct owners to enlarge the council",
            ),
        }
    }
}

/// Why a task went back to bidding, or failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "code", rename_all = "snake_case")]
pub enum Reason {
    /// Nobody bid before the job's time bound.
    NoBids {},
    /// The auction stayed open for want of council members.
    NoCouncil {
        /// Seats to fill.
        needed: u32,
        /// Eligible providers of distinct owners besides the executor.
        available: u32,
    },
    /// The auction was still open (bids in, not closed) at the job's time bound.
    AuctionOpen {},
    /// The council's seats could not be filled when drawn.
    CouncilUnfilled {},
    /// The executor did not commit in time.
    ExecutorMissedCommit {},
    /// The executor did not reveal in time.
    ExecutorDidNotReveal {},
    /// A clear majority of the council rejected the result.
    Rejected {},
    /// Nobody's run could be compared with the executor's.
    NothingCompared {
        /// Why the runs decided nothing.
        why: Undecided,
    },
    /// Runs that agree with each other disagree with the executor's.
    AgainstExecutor {
        /// Why the runs decided nothing.
        why: Undecided,
    },
    /// The revealed runs agree, but silent seats kept them short of a clear majority.
    SilenceKeptShort {
        /// Why the runs decided nothing.
        why: Undecided,
    },
}

gridwork_types::codec_enum!(Reason, "task reason" {
    0 => NoBids {},
    1 => NoCouncil { needed: u32, available: u32 },
    2 => AuctionOpen {},
    3 => CouncilUnfilled {},
    4 => ExecutorMissedCommit {},
    5 => ExecutorDidNotReveal {},
    6 => Rejected {},
    7 => NothingCompared { why: Undecided },
    8 => AgainstExecutor { why: Undecided },
    9 => SilenceKeptShort { why: Undecided },
});

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reason::NoBids {} => f.write_str("no provider bid in time"),
            Reason::NoCouncil { needed, available } => write!(
                f,
                "waiting for council members: needs {needed} eligible providers of distinct owners besides the executor, {available} available"
            ),
            Reason::AuctionOpen {} => f.write_str("the auction had bids but had not closed"),
            Reason::CouncilUnfilled {} => {
                f.write_str("too few eligible providers of distinct owners to fill the council")
            }
            Reason::ExecutorMissedCommit {} => f.write_str("the executor missed its deadline"),
            Reason::ExecutorDidNotReveal {} => f.write_str("the executor did not reveal"),
            Reason::Rejected {} => {
                f.write_str("a clear majority of the council rejected the result")
            }
            Reason::NothingCompared { why } => write!(f, "no run could be compared: {why}"),
            Reason::AgainstExecutor { why } => write!(
                f,
                "runs that agree with each other disagree with the executor's: {why}"
            ),
            Reason::SilenceKeptShort { why } => write!(
                f,
                "the revealed runs agree, but silent seats kept them short of a clear majority: {why}"
            ),
        }
    }
}

/// Where a task stands and why, for people: each phase's state, the numbers that matter, and
/// the reason of the last reopening or failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "code", rename_all = "snake_case")]
pub enum TaskNote {
    /// Open for bids, none yet.
    OpenForBids {},
    /// Bids came in.
    Bids {
        /// How many.
        count: u32,
    },
    /// The auction's window passed without a bid; the first bid closes it.
    NoBidsYet {},
    /// The auction closed but too few council members are eligible; it stays open.
    WaitingForCouncil {
        /// Seats to fill.
        needed: u32,
        /// Eligible providers of distinct owners besides the executor.
        available: u32,
    },
    /// Executor (and council) at work.
    Running {},
    /// Executor at work; the council is drawn at the next block.
    CouncilDrawnNext {},
    /// Council members missed the commit deadline; their seats are drawn at the next block.
    SilentToReplace {
        /// How many.
        count: u32,
    },
    /// Commitments are opened.
    Revealing {},
    /// The parties compare each other's outputs.
    Judging {},
    /// Accepted and paid.
    Settled {},
    /// Cancelled by the requester.
    Cancelled {},
    /// The council grows for want of a clear majority.
    Enlarged {
        /// Seats now.
        seats: u8,
        /// Why.
        why: Undecided,
    },
    /// Back to bidding as a new attempt.
    Reopened {
        /// Why.
        why: Reason,
    },
    /// Failed after its last attempt.
    Failed {
        /// Attempts made.
        attempts: u32,
        /// Why the last one ended.
        why: Reason,
    },
    /// Failed at the job's time bound.
    GaveUp {
        /// Why it was still waiting.
        why: Reason,
    },
    /// Failed: the runs disagree even after enlarging the council.
    Nondeterministic {
        /// How.
        why: Undecided,
    },
    /// A checkpointed task's executor bound its checkpoints; the segments the council
    /// replays are drawn at the next block.
    ReplayDrawnNext {},
    /// A checkpointed task's council replays the drawn segments.
    Replaying {},
}

gridwork_types::codec_enum!(TaskNote, "task note" {
    0 => OpenForBids {},
    1 => Bids { count: u32 },
    2 => NoBidsYet {},
    3 => WaitingForCouncil { needed: u32, available: u32 },
    4 => Running {},
    5 => CouncilDrawnNext {},
    6 => SilentToReplace { count: u32 },
    7 => Revealing {},
    8 => Judging {},
    9 => Settled {},
    10 => Cancelled {},
    11 => Enlarged { seats: u8, why: Undecided },
    12 => Reopened { why: Reason },
    13 => Failed { attempts: u32, why: Reason },
    14 => GaveUp { why: Reason },
    15 => Nondeterministic { why: Undecided },
    16 => ReplayDrawnNext {},
    17 => Replaying {},
});

impl TaskNote {
    /// Why a task given up while still bidding was waiting.
    pub(super) fn waiting_reason(&self) -> Reason {
        match *self {
            TaskNote::WaitingForCouncil { needed, available } => {
                Reason::NoCouncil { needed, available }
            }
            TaskNote::OpenForBids {} | TaskNote::NoBidsYet {} => Reason::NoBids {},
            _ => Reason::AuctionOpen {},
        }
    }
}

impl std::fmt::Display for TaskNote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TaskNote::OpenForBids {} => f.write_str("open for bids"),
            TaskNote::Bids { count } => write!(f, "{count} bid(s)"),
            TaskNote::NoBidsYet {} => {
                f.write_str("no bids yet; the first bid closes the auction")
            }
            TaskNote::WaitingForCouncil { needed, available } => {
                Reason::NoCouncil {
                    needed: *needed,
                    available: *available,
                }
                .fmt(f)
            }
            TaskNote::Running {} => f.write_str("running"),
            TaskNote::ReplayDrawnNext {} => f.write_str(
                "the executor bound its checkpoints; the segments to replay are drawn at the next block",
            ),
            TaskNote::Replaying {} => f.write_str("the council replays the drawn segments"),
            TaskNote::CouncilDrawnNext {} => {
                f.write_str("running; council drawn at the next block")
            }
            TaskNote::SilentToReplace { count } => write!(
                f,
                "{count} silent council member(s) to be replaced at the next block"
            ),
            TaskNote::Revealing {} => f.write_str("revealing"),
            TaskNote::Judging {} => {
                f.write_str("judging: the parties compare each other's outputs")
            }
            TaskNote::Settled {} => f.write_str("settled"),
            TaskNote::Cancelled {} => f.write_str("cancelled by the requester"),
            TaskNote::Enlarged { seats, why } => {
                write!(f, "council enlarged to {seats} seats: {why}")
            }
            TaskNote::Reopened { why } => write!(f, "reopened: {why}"),
            TaskNote::Failed { attempts, why } => {
                write!(f, "failed after {attempts} attempts: {why}")
            }
            TaskNote::GaveUp { why } => write!(
                f,
                "gave up at the job's time bound (halting.give_up_after_s): {why}"
            ),
            TaskNote::Nondeterministic { why } => write!(
                f,
                "judged nondeterministic: {why}, even after enlarging the council; nobody was slashed and the runs were paid"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gridwork_types::{Decode, Encode};

    /// What the state root hashes is a tag and the numbers: the words are not in it, so
    /// rewording one changes no block. Every note reads back as it was written.
    #[test]
    fn a_note_is_a_code_in_state_and_words_at_the_edge() {
        let note = TaskNote::Reopened {
            why: Reason::SilenceKeptShort {
                why: Undecided::NoClearMajority {
                    largest: 2,
                    seats: 4,
                    silent: 1,
                },
            },
        };
        let mut expected = vec![12, 9, 2];
        for n in [2u32, 4, 1] {
            expected.extend(n.to_le_bytes());
        }
        assert_eq!(note.to_bytes(), expected);
        assert!(note
            .to_string()
            .starts_with("reopened: the revealed runs agree, but silent seats kept them short"));
        let undecided = [
            Undecided::TooManyRuns { runs: 17 },
            Undecided::TwoGroups { group: 2, seats: 5 },
            Undecided::NoClearMajority {
                largest: 1,
                seats: 3,
                silent: 2,
            },
            Undecided::CannotEnlarge {},
        ];
        let mut reasons = vec![
            Reason::NoBids {},
            Reason::NoCouncil {
                needed: 3,
                available: 1,
            },
            Reason::AuctionOpen {},
            Reason::CouncilUnfilled {},
            Reason::ExecutorMissedCommit {},
            Reason::ExecutorDidNotReveal {},
            Reason::Rejected {},
        ];
        for why in undecided {
            reasons.push(Reason::NothingCompared { why });
            reasons.push(Reason::AgainstExecutor { why });
            reasons.push(Reason::SilenceKeptShort { why });
        }
        let mut notes = vec![
            TaskNote::OpenForBids {},
            TaskNote::Bids { count: 3 },
            TaskNote::NoBidsYet {},
            TaskNote::WaitingForCouncil {
                needed: 2,
                available: 0,
            },
            TaskNote::Running {},
            TaskNote::CouncilDrawnNext {},
            TaskNote::SilentToReplace { count: 1 },
            TaskNote::Revealing {},
            TaskNote::Judging {},
            TaskNote::Settled {},
            TaskNote::Cancelled {},
        ];
        for why in undecided {
            notes.push(TaskNote::Enlarged { seats: 5, why });
            notes.push(TaskNote::Nondeterministic { why });
        }
        for why in reasons {
            notes.push(TaskNote::Reopened { why });
            notes.push(TaskNote::Failed { attempts: 3, why });
            notes.push(TaskNote::GaveUp { why });
        }
        for note in notes {
            assert_eq!(TaskNote::from_bytes(&note.to_bytes()), Ok(note));
            assert!(!note.to_string().is_empty());
        }
    }
}
