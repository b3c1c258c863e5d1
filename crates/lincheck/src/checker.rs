//! The linearizability search.
//!
//! Each partition is checked on its own with the Wing & Gong search as refined
//! by Lowe ("Testing for linearizability", 2017) and used by Porcupine: the
//! invoke and return events, sorted by real time, form a doubly linked list. The
//! search repeatedly picks an operation whose invoke comes before the first
//! return still in the list (so no operation that must precede it is left
//! out), applies it to the model, and removes both of its events. Reaching a
//! return event means the operation it closes cannot be ordered any later:
//! undo the last choice and try the next. A cache of (set of linearized
//! operations, model state) pairs already explored cuts the otherwise
//! factorial search down to the states that really differ.
//!
//! Operations whose outcome is unknown have no return event: nothing forces
//! them in, and the search succeeds once every operation with a definite
//! outcome is placed, so each may take effect at any point after its invoke or
//! never.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::{History, Model, OpId, Outcome};

/// Limits on the work a check may do. When one is reached the verdict is
/// [`Verdict::Unknown`], never a guess.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CheckOptions {
    /// Wall-clock budget for the whole check. Not deterministic: a simulator
    /// that must replay exactly should prefer `max_steps`.
    pub timeout: Option<Duration>,
    /// Budget of search steps (one step = one event looked at) for the whole
    /// check. Deterministic.
    pub max_steps: Option<u64>,
}

/// The answer of [`check`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Every partition has a linearization.
    Linearizable,
    /// Some partition has none; the violation explains the first one found.
    NotLinearizable(Box<Violation>),
    /// The budget ran out before a verdict; the string says where.
    Unknown(String),
}

impl Verdict {
    /// One line for scripts: `linearizable`, `not linearizable` or `unknown`.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Linearizable => "linearizable",
            Self::NotLinearizable(_) => "not linearizable",
            Self::Unknown(_) => "unknown",
        }
    }

    /// The verdict is [`Verdict::Linearizable`].
    pub fn is_linearizable(&self) -> bool {
        matches!(self, Self::Linearizable)
    }
}

/// One operation as shown in a [`Violation`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpSummary {
    /// The operation in the checked [`History`].
    pub id: OpId,
    /// Its client.
    pub process: u64,
    /// What it did and returned, in the model's words.
    pub description: String,
    /// When it was invoked.
    pub invoke_time: u64,
    /// When it returned; `None` if its outcome is unknown.
    pub return_time: Option<u64>,
}

impl fmt::Display for OpSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} process {}: {} (invoked at {}, ",
            self.id, self.process, self.description, self.invoke_time
        )?;
        match self.return_time {
            Some(t) => write!(f, "returned at {t})"),
            None => write!(f, "never returned)"),
        }
    }
}

/// An operation that could have been linearized next, and why it was not.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    /// The operation.
    pub op: OpSummary,
    /// The model accepts it in the state after the prefix, but no
    /// linearization goes on from there. When false the model rejects it.
    pub applies: bool,
}

/// Why one partition is not linearizable, small enough to read.
///
/// The search keeps the longest prefix of a linearization it managed to build.
/// After that prefix, some operation (`deadline`) has to take effect before
/// anything that starts after it returns, and none of the operations that may
/// go next (`candidates`, which include `deadline` unless it was the one
/// blocked) fits the state the prefix leaves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The partition, e.g. `key "4"`.
    pub partition: String,
    /// Operations checked in that partition (failed operations and reads with an
    /// unknown outcome are dropped first).
    pub operations_checked: usize,
    /// Longest linearizable prefix found, in linearization order.
    pub prefix: Vec<OpSummary>,
    /// Model state after `prefix`.
    pub state_after_prefix: String,
    /// The pending operation with the earliest return.
    pub deadline: OpSummary,
    /// Operations invoked before `deadline` returned and not in `prefix`.
    pub candidates: Vec<Candidate>,
}

/// How many prefix operations [`Violation`]'s `Display` shows.
const PREFIX_SHOWN_MAX: usize = 8;

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{}: its {} operations have no linearization.",
            self.partition, self.operations_checked
        )?;
        let shown = self.prefix.len().min(PREFIX_SHOWN_MAX);
        if self.prefix.is_empty() {
            writeln!(f, "Not even the first operation can be placed.")?;
        } else {
            writeln!(
                f,
                "The longest linearizable prefix found orders {} of them; its last {shown}:",
                self.prefix.len()
            )?;
            for op in &self.prefix[self.prefix.len() - shown..] {
                writeln!(f, "  {op}")?;
            }
        }
        writeln!(f, "After that prefix, {} holds {}.", self.partition, self.state_after_prefix)?;
        writeln!(
            f,
            "Of the operations left, {} returns first, so it or an operation invoked \
             before it returned must come next; none can:",
            self.deadline.id
        )?;
        for c in &self.candidates {
            let why = if c.applies {
                "fits, but no linearization continues from it"
            } else {
                "impossible in that state"
            };
            writeln!(f, "  {}  <- {why}", c.op)?;
        }
        Ok(())
    }
}

/// Decides whether `history` is linearizable with respect to `model`.
///
/// Failed operations are dropped, unknown ones may take effect at any time
/// after their invoke or never, and each partition is checked on its own.
/// Partitions take turns, in partition order, with a step slice that doubles
/// each round; the first violation found is reported. Which one that is
/// depends only on the history, not on the clock.
pub fn check<M: Model>(
    model: &M,
    history: &History<M::Input, M::Output>,
    options: &CheckOptions,
) -> Verdict {
    let mut budget = Budget::new(options);
    let mut pending: Vec<(M::Partition, Search<'_, M>)> = partitions(model, history)
        .into_iter()
        .map(|(partition, ops)| (partition, Search::new(model, ops)))
        .collect();
    // Partitions take turns with doubling slices, so one partition whose search
    // space is huge cannot hide a violation that another shows at once.
    let mut slice_steps = FIRST_SLICE_STEPS;
    while !pending.is_empty() {
        let mut still_pending = Vec::with_capacity(pending.len());
        for (partition, mut search) in pending {
            match search.run(model, &mut budget, slice_steps) {
                Progress::Linearizable => {}
                Progress::Paused => still_pending.push((partition, search)),
                Progress::Stuck => {
                    let violation = explain(model, history, &partition, &search);
                    return Verdict::NotLinearizable(Box::new(violation));
                }
                Progress::OutOfBudget => {
                    return Verdict::Unknown(format!(
                        "{} while checking {} ({} operations)",
                        budget.exhausted_reason(),
                        model.describe_partition(&partition),
                        search.ops.len()
                    ));
                }
            }
        }
        pending = still_pending;
        slice_steps = slice_steps.saturating_mul(2);
    }
    Verdict::Linearizable
}

/// Steps each partition gets in the first round.
const FIRST_SLICE_STEPS: u64 = 1 << 12;

/// An operation as the search sees it.
struct SearchOp<'h, M: Model> {
    id: OpId,
    input: &'h M::Input,
    /// `None`: outcome unknown.
    output: Option<&'h M::Output>,
    invoke: (u64, u64),
    /// `None`: never returned (+infinity).
    ret: Option<(u64, u64)>,
}

type Partitions<'h, M> = BTreeMap<<M as Model>::Partition, Vec<SearchOp<'h, M>>>;

/// Splits the history by partition, dropping what constrains nothing: failed
/// operations, and reads whose outcome is unknown.
fn partitions<'h, M: Model>(
    model: &M,
    history: &'h History<M::Input, M::Output>,
) -> Partitions<'h, M> {
    let mut parts: Partitions<'h, M> = BTreeMap::new();
    for (index, op) in history.operations().iter().enumerate() {
        let (output, ret) = match op.outcome() {
            Outcome::Fail => continue,
            Outcome::Unknown if model.is_read_only(&op.input) => continue,
            Outcome::Unknown => (None, None),
            Outcome::Ok(out) => (Some(out), op.return_position()),
        };
        parts.entry(model.partition(&op.input)).or_default().push(SearchOp {
            id: OpId::from_index(index),
            input: &op.input,
            output,
            invoke: op.invoke_position(),
            ret,
        });
    }
    parts
}

/// Sentinel "no node" link.
const NIL: u32 = u32::MAX;
/// The list head; event nodes are 1..
const HEAD: u32 = 0;

/// The invoke/return events of one partition as a doubly linked list in real
/// time order, from which operations are lifted as they are linearized and
/// put back, in reverse order, as the search backtracks.
struct EventList {
    next: Vec<u32>,
    prev: Vec<u32>,
    /// Operation of each node (unused for the head).
    node_op: Vec<u32>,
    node_is_call: Vec<bool>,
    call_node: Vec<u32>,
    /// `NIL` for operations that never returned.
    return_node: Vec<u32>,
}

impl EventList {
    fn new<M: Model>(ops: &[SearchOp<'_, M>]) -> Self {
        let mut events: Vec<((u64, u64), u32, bool)> = Vec::with_capacity(ops.len() * 2);
        for (i, op) in ops.iter().enumerate() {
            let i = u32::try_from(i).expect("partition has fewer than 2^32 operations");
            events.push((op.invoke, i, true));
            if let Some(ret) = op.ret {
                assert!(ret > op.invoke, "an operation returns after its invoke");
                events.push((ret, i, false));
            }
        }
        // Positions are distinct: the recording sequence breaks time ties.
        events.sort_unstable_by_key(|e| e.0);
        let nodes = events.len() + 1;
        let mut list = Self {
            next: Vec::with_capacity(nodes),
            prev: Vec::with_capacity(nodes),
            node_op: Vec::with_capacity(nodes),
            node_is_call: Vec::with_capacity(nodes),
            call_node: vec![NIL; ops.len()],
            return_node: vec![NIL; ops.len()],
        };
        list.node_op.push(NIL);
        list.node_is_call.push(false);
        for (k, &(_, op, is_call)) in events.iter().enumerate() {
            let node = u32::try_from(k + 1).expect("fewer than 2^32 events");
            list.node_op.push(op);
            list.node_is_call.push(is_call);
            if is_call {
                list.call_node[op as usize] = node;
            } else {
                list.return_node[op as usize] = node;
            }
        }
        for node in 0..nodes {
            let node = node as u32;
            list.prev.push(node.wrapping_sub(1)); // head gets NIL
            list.next.push(if (node as usize) + 1 < nodes { node + 1 } else { NIL });
        }
        list
    }

    fn unlink(&mut self, node: u32) {
        let (p, n) = (self.prev[node as usize], self.next[node as usize]);
        self.next[p as usize] = n;
        if n != NIL {
            self.prev[n as usize] = p;
        }
    }

    /// Undoes `unlink(node)`; valid only in reverse order of the unlinks.
    fn relink(&mut self, node: u32) {
        let (p, n) = (self.prev[node as usize], self.next[node as usize]);
        self.next[p as usize] = node;
        if n != NIL {
            self.prev[n as usize] = node;
        }
    }

    fn lift(&mut self, op: u32) {
        self.unlink(self.call_node[op as usize]);
        let ret = self.return_node[op as usize];
        if ret != NIL {
            self.unlink(ret);
        }
    }

    fn unlift(&mut self, op: u32) {
        let ret = self.return_node[op as usize];
        if ret != NIL {
            self.relink(ret);
        }
        self.relink(self.call_node[op as usize]);
    }
}

/// The set of linearized operations.
#[derive(Clone, PartialEq, Eq, Hash)]
struct Bitset(Box<[u64]>);

impl Bitset {
    fn new(bits: usize) -> Self {
        Self(vec![0; bits.div_ceil(64)].into_boxed_slice())
    }

    fn set(&mut self, bit: u32) {
        self.0[(bit / 64) as usize] |= 1 << (bit % 64);
    }

    fn clear(&mut self, bit: u32) {
        self.0[(bit / 64) as usize] &= !(1 << (bit % 64));
    }
}

/// A fast, non-cryptographic hasher (multiply-rotate, as in rustc's FxHash):
/// the cache hashes a bitset and a state on every step, and nothing here is
/// adversarial.
#[derive(Default)]
struct FastHasher(u64);

impl FastHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

impl Hasher for FastHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
    }

    fn write_u8(&mut self, n: u8) {
        self.add(u64::from(n));
    }

    fn write_u32(&mut self, n: u32) {
        self.add(u64::from(n));
    }

    fn write_u64(&mut self, n: u64) {
        self.add(n);
    }

    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// Counts search steps against the limits of [`CheckOptions`].
struct Budget {
    deadline: Option<Instant>,
    timeout: Option<Duration>,
    steps_max: Option<u64>,
    steps: u64,
}

/// Steps between clock reads (a power of two); reading the clock every step
/// would dominate.
const STEPS_PER_CLOCK_READ: u64 = 1024;
const _: () = assert!(STEPS_PER_CLOCK_READ.is_power_of_two());

impl Budget {
    fn new(options: &CheckOptions) -> Self {
        Self {
            deadline: options.timeout.map(|t| Instant::now() + t),
            timeout: options.timeout,
            steps_max: options.max_steps,
            steps: 0,
        }
    }

    /// Takes one step; false once a limit is reached.
    fn step(&mut self) -> bool {
        self.steps += 1;
        if self.steps_max.is_some_and(|max| self.steps > max) {
            return false;
        }
        if self.steps & (STEPS_PER_CLOCK_READ - 1) == 0 {
            if let Some(deadline) = self.deadline {
                return Instant::now() < deadline;
            }
        }
        true
    }

    fn exhausted_reason(&self) -> String {
        match (self.steps_max, self.timeout) {
            (Some(max), _) if self.steps > max => format!("step budget of {max} used up"),
            (_, Some(t)) => format!("time budget of {:.1} s used up", t.as_secs_f64()),
            _ => "budget used up".to_string(),
        }
    }
}

/// Where a partition's search stands after a slice of work.
enum Progress {
    Linearizable,
    /// No linearization exists.
    Stuck,
    /// The slice ran out; call [`Search::run`] again.
    Paused,
    /// The check's whole budget ran out.
    OutOfBudget,
}

/// The search over one partition, resumable so that partitions can take turns.
struct Search<'h, M: Model> {
    ops: Vec<SearchOp<'h, M>>,
    list: EventList,
    // States are shared between the current position, the undo stack and
    // the cache: they can be long (an append log), so they are not copied.
    state: Rc<M::State>,
    linearized: Bitset,
    /// (operation, state before it) for each operation placed, in order.
    placed: Vec<(u32, Rc<M::State>)>,
    explored: HashSet<(Bitset, Rc<M::State>), BuildHasherDefault<FastHasher>>,
    /// Operations with a definite outcome not yet placed; done at zero.
    definite_left: usize,
    /// Longest prefix placed so far, for the explanation.
    best_prefix: Vec<u32>,
    /// Next event to look at.
    node: u32,
}

impl<'h, M: Model> Search<'h, M> {
    fn new(model: &M, ops: Vec<SearchOp<'h, M>>) -> Self {
        let list = EventList::new(&ops);
        let node = list.next[HEAD as usize];
        Self {
            state: Rc::new(model.init()),
            linearized: Bitset::new(ops.len()),
            placed: Vec::new(),
            explored: HashSet::default(),
            definite_left: ops.iter().filter(|op| op.ret.is_some()).count(),
            best_prefix: Vec::new(),
            node,
            list,
            ops,
        }
    }

    /// Searches for at most `slice_steps` steps.
    fn run(&mut self, model: &M, budget: &mut Budget, slice_steps: u64) -> Progress {
        for _ in 0..slice_steps {
            if self.definite_left == 0 {
                return Progress::Linearizable;
            }
            if !budget.step() {
                return Progress::OutOfBudget;
            }
            if !self.step(model) {
                return Progress::Stuck;
            }
        }
        if self.definite_left == 0 {
            Progress::Linearizable
        } else {
            Progress::Paused
        }
    }

    /// Looks at one event; false when the search space is exhausted.
    fn step(&mut self, model: &M) -> bool {
        let node = self.node;
        // While a definite operation is unplaced its return event is in the
        // list, after every call the scan passes, so the scan never runs off.
        assert_ne!(node, NIL, "search ran past the last event");
        let index = self.list.node_op[node as usize];
        if !self.list.node_is_call[node as usize] {
            // The operation returning here was not placed before its return:
            // undo the last choice and try the one after it.
            let Some((undone, previous)) = self.placed.pop() else {
                return false;
            };
            self.linearized.clear(undone);
            self.state = previous;
            self.list.unlift(undone);
            if self.ops[undone as usize].ret.is_some() {
                self.definite_left += 1;
            }
            self.node = self.list.next[self.list.call_node[undone as usize] as usize];
            return true;
        }
        let op = &self.ops[index as usize];
        if let Some(after) = model.step(&self.state, op.input, op.output) {
            let after = match after {
                Cow::Borrowed(same) if std::ptr::eq(same, &*self.state) => Rc::clone(&self.state),
                other => Rc::new(other.into_owned()),
            };
            self.linearized.set(index);
            if self.explored.insert((self.linearized.clone(), Rc::clone(&after))) {
                self.placed.push((index, std::mem::replace(&mut self.state, after)));
                self.list.lift(index);
                if op.ret.is_some() {
                    self.definite_left -= 1;
                }
                if self.placed.len() > self.best_prefix.len() {
                    self.best_prefix = self.placed.iter().map(|(i, _)| *i).collect();
                }
                self.node = self.list.next[HEAD as usize];
                return true;
            }
            self.linearized.clear(index);
        }
        self.node = self.list.next[node as usize];
        true
    }
}

fn summary<M: Model>(
    model: &M,
    history: &History<M::Input, M::Output>,
    op: &SearchOp<'_, M>,
) -> OpSummary {
    let recorded = history.operation(op.id);
    OpSummary {
        id: op.id,
        process: recorded.process,
        description: model.describe_operation(op.input, op.output),
        invoke_time: recorded.invoke_time,
        return_time: op.ret.map(|(time, _)| time),
    }
}

/// Builds the explanation for a partition whose search got stuck.
fn explain<M: Model>(
    model: &M,
    history: &History<M::Input, M::Output>,
    partition: &M::Partition,
    search: &Search<'_, M>,
) -> Violation {
    let (ops, best_prefix) = (&search.ops, &search.best_prefix);
    let mut state = model.init();
    let mut placed = vec![false; ops.len()];
    for &i in best_prefix {
        let op = &ops[i as usize];
        let next = model
            .step(&state, op.input, op.output)
            .expect("the search only keeps prefixes the model accepts")
            .into_owned();
        state = next;
        placed[i as usize] = true;
    }
    let deadline = (0..ops.len())
        .filter(|&i| !placed[i])
        .filter_map(|i| ops[i].ret.map(|ret| (ret, i)))
        .min()
        .map(|(_, i)| i)
        .expect("a stuck search leaves a definite operation unplaced");
    let deadline_ret = ops[deadline].ret.expect("deadline returned");
    let mut candidates: Vec<usize> =
        (0..ops.len()).filter(|&i| !placed[i] && ops[i].invoke < deadline_ret).collect();
    candidates.sort_by_key(|&i| ops[i].invoke);
    Violation {
        partition: model.describe_partition(partition),
        operations_checked: ops.len(),
        prefix: best_prefix.iter().map(|&i| summary(model, history, &ops[i as usize])).collect(),
        state_after_prefix: model.describe_state(&state),
        deadline: summary(model, history, &ops[deadline]),
        candidates: candidates
            .into_iter()
            .map(|i| Candidate {
                op: summary(model, history, &ops[i]),
                applies: model.step(&state, ops[i].input, ops[i].output).is_some(),
            })
            .collect(),
    }
}
