//! The end of a program in a forked child. Some steps end what a process
//! can do only once: upstream's `shutdown` flag (set by its atexit hook)
//! has no way back, and `finalize` ends the interpreter itself. The
//! harness forks at such a step (`shutdown` where
//! [`crate::harness::Target::SHUTDOWN_IN_CHILD`], `finalize` on every
//! backend, [`forks_at`]); the child runs it, the
//! rest of the program and the teardown through the same executor (its
//! copy of the model and the backend's world), and tells the parent
//! through a pipe which step it is in and how it ended. The parent, whose
//! world is the program's up to the fork, tears that world down as if the
//! program had ended there, and reports what the child reported. A child
//! that dies of a signal (a crash in upstream's teardown branches) is a
//! failure with the program up to the step it was in; a child that hangs
//! is the parent's watchdog's to report (each step the child begins
//! re-arms it), and dies with the parent.

use std::io::{Read, Write};

use pyo3::Python;
use pytie_core::exec::coverage::{Combo, ComboSet};
use pytie_core::exec::{Executor, Failure, FailureKind, Injected, Outcome};
use pytie_core::program::{Op, Program, StepKind};

use crate::harness::Target;
use crate::interp::{self, ChildEnd, Forked};
use crate::watchdog;

/// Run `prog.ops[from..]` and the teardown in a forked child; `ex` has run
/// `prog.ops[..from]`. Ends as the whole program run in one process would:
/// the outcome of the whole program, or its failure.
pub fn finish_in_child<B: Target>(
    ex: &mut Executor<B>,
    prog: &Program,
    from: usize,
) -> Result<Outcome, Box<Failure>> {
    let step_text = prog.ops[from].to_string();
    let fork_reason = fork_reason(&prog.ops[from]);
    let cannot = |ex: &Executor<B>, why: String| {
        ex.relayed_failure(
            FailureKind::RuntimeAssertion,
            Some(from + 1),
            step_text.clone(),
            vec![format!("cannot fork to run the program's end: {why}")],
            prog,
        )
    };
    let (mut reader, writer) = match std::io::pipe() {
        Ok(p) => p,
        Err(e) => return Err(cannot(ex, format!("pipe: {e}"))),
    };
    let pid = match Python::attach(interp::fork) {
        Ok(Forked::Child) => {
            drop(reader);
            child(ex, prog, from, writer)
        }
        Ok(Forked::Parent(pid)) => pid,
        Err(e) => return Err(cannot(ex, e)),
    };
    drop(writer);
    // The child's records, as they come: each begun step re-arms this
    // process's watchdog, so a hang in the child is reported at its step.
    let mut report = Report::default();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match reader.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                report.take(&mut buf);
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    let end = interp::wait_child(pid);
    // This process's world is the program's up to the fork: end it as if
    // the program had ended there.
    watchdog::arm_teardown();
    let own = ex.finish()?;
    match (report.failure, end) {
        (Some((kind, step, text, body)), _) => {
            let at = match step {
                Some(n) => format!("step {n}"),
                None => "its teardown".to_string(),
            };
            let note = format!(
                "the program's end ran in a child process forked at step {} (`{}`: {}); the \
                 child failed at {at}:",
                from + 1,
                step_text,
                fork_reason
            );
            Err(ex.relayed_failure(kind, step, text, vec![note, body], prog))
        }
        (None, Ok(ChildEnd::Exited(0))) if report.outcome.is_some() => {
            // The child's outcome is the whole program's (its executor
            // began it here); this process's teardown adds combinations.
            let mut whole = report.outcome.unwrap();
            whole.combos.union(&own.combos);
            Ok(whole)
        }
        (None, end) => {
            let how = match end {
                Ok(ChildEnd::Signaled(sig)) => match watchdog::signal_name(sig) {
                    Some(name) => format!("died of {name}"),
                    None => format!("died of signal {sig}"),
                },
                Ok(ChildEnd::Exited(code)) => format!(
                    "exited with status {code} and no report (a sanitizer exits so after its \
                     report)"
                ),
                Err(e) => e,
            };
            let (step, text) = match report.step {
                Some(0) | None => (None, "teardown (in the child)".to_string()),
                Some(n) => (Some(n), prog.ops[n - 1].to_string()),
            };
            let at = step.map_or("its teardown".to_string(), |n| format!("step {n}"));
            Err(ex.relayed_failure(
                FailureKind::Crash,
                step,
                text,
                vec![format!(
                    "the child process forked at step {} (`{step_text}`: {fork_reason}) {how} \
                     in {at}; its own report, if the signal let it print one, is on standard \
                     error",
                    from + 1
                )],
                prog,
            ))
        }
    }
}

/// Why the program's end runs in a child, forked at `op`.
fn fork_reason(op: &Op) -> &'static str {
    match op {
        Op::Finalize => "the interpreter's end cannot be undone in a process",
        _ => "upstream's shutdown flag cannot be reset in a process",
    }
}

/// The child's side: never returns.
fn child<B: Target>(
    ex: &mut Executor<B>,
    prog: &Program,
    from: usize,
    mut w: std::io::PipeWriter,
) -> ! {
    let mut out = Vec::new();
    let send = |w: &mut std::io::PipeWriter, rec: &[u8]| {
        let _ = w.write_all(rec);
    };
    for (i, op) in prog.ops.iter().enumerate().skip(from) {
        send(&mut w, &step_record(i + 1));
        watchdog::arm(i + 1);
        if let Err(f) = ex.step(op) {
            failure_record(&mut out, &f);
            send(&mut w, &out);
            interp::exit_child(0);
        }
    }
    send(&mut w, &step_record(0));
    watchdog::arm_teardown();
    match ex.finish() {
        Ok(o) => outcome_record(&mut out, &o),
        Err(f) => failure_record(&mut out, &f),
    }
    send(&mut w, &out);
    drop(w);
    interp::exit_child(0)
}

fn step_record(n: usize) -> Vec<u8> {
    let mut r = vec![b'S'];
    put_u32(&mut r, n as u32);
    r
}

fn put_u32(out: &mut Vec<u8>, n: u32) {
    out.extend_from_slice(&n.to_le_bytes());
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_u32(out, s.len() as u32);
    out.extend_from_slice(s.as_bytes());
}

fn outcome_record(out: &mut Vec<u8>, o: &Outcome) {
    out.push(b'O');
    put_u32(out, o.steps as u32);
    put_u32(out, o.unheld as u32);
    put_u32(out, o.not_judged as u32);
    put_u32(out, o.skipped.len() as u32);
    for k in &o.skipped {
        put_u32(
            out,
            StepKind::ALL.iter().position(|x| x == k).unwrap_or(0) as u32,
        );
    }
    for list in [&o.refused, &o.worked_around] {
        put_u32(out, list.len() as u32);
        for (step, why) in list {
            put_u32(out, *step as u32);
            put_str(out, why);
        }
    }
    let combos: Vec<usize> = o.combos.indices().collect();
    put_u32(out, combos.len() as u32);
    for c in combos {
        put_u32(out, c as u32);
    }
    put_u32(out, o.injected.len() as u32);
    for j in &o.injected {
        put_u32(out, j.step as u32);
        put_u32(out, j.k);
        out.push(u8::from(j.reached) | u8::from(j.failed) << 1);
    }
}

/// The failure's kind, step and text, and its report without the lines
/// the parent prints itself (the first two and the program).
fn failure_record(out: &mut Vec<u8>, f: &Failure) {
    out.push(b'F');
    let kind = FailureKind::ALL
        .iter()
        .position(|k| *k == f.kind)
        .unwrap_or(0);
    out.push(kind as u8);
    put_u32(out, f.step.map_or(0, |s| s as u32));
    put_str(out, &f.step_text);
    let text = f.to_string();
    let body: Vec<&str> = text
        .lines()
        .skip(2)
        .take_while(|l| !l.starts_with("program up to the failing step"))
        .collect();
    put_str(out, body.join("\n").trim_end());
}

/// What the parent has read of the child's records so far.
#[derive(Default)]
struct Report {
    /// The step the child began last (0: its teardown).
    step: Option<usize>,
    outcome: Option<Outcome>,
    failure: Option<(FailureKind, Option<usize>, String, String)>,
}

impl Report {
    /// Take every whole record off the front of `buf`.
    fn take(&mut self, buf: &mut Vec<u8>) {
        loop {
            let mut r = Reader { buf, at: 0 };
            let Some(tag) = r.u8() else { return };
            let done = match tag {
                b'S' => r.u32().map(|n| {
                    let n = n as usize;
                    self.step = Some(n);
                    if n == 0 {
                        watchdog::arm_teardown();
                    } else {
                        watchdog::arm(n);
                    }
                }),
                b'O' => read_outcome(&mut r).map(|o| self.outcome = Some(o)),
                b'F' => read_failure(&mut r).map(|f| self.failure = Some(f)),
                _ => {
                    // Not a record: the rest is garbage.
                    buf.clear();
                    return;
                }
            };
            if done.is_none() {
                return; // incomplete: wait for more
            }
            let used = r.at;
            buf.drain(..used);
        }
    }
}

struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn u8(&mut self) -> Option<u8> {
        let b = *self.buf.get(self.at)?;
        self.at += 1;
        Some(b)
    }
    fn u32(&mut self) -> Option<u32> {
        let b = self.buf.get(self.at..self.at + 4)?;
        self.at += 4;
        Some(u32::from_le_bytes(b.try_into().ok()?))
    }
    fn str(&mut self) -> Option<String> {
        let n = self.u32()? as usize;
        let b = self.buf.get(self.at..self.at + n)?;
        self.at += n;
        Some(String::from_utf8_lossy(b).into_owned())
    }
}

fn read_outcome(r: &mut Reader<'_>) -> Option<Outcome> {
    let mut o = Outcome {
        steps: r.u32()? as usize,
        unheld: r.u32()? as usize,
        not_judged: r.u32()? as usize,
        ..Outcome::default()
    };
    for _ in 0..r.u32()? {
        o.skipped.push(*StepKind::ALL.get(r.u32()? as usize)?);
    }
    for i in 0..2 {
        let list = if i == 0 {
            &mut o.refused
        } else {
            &mut o.worked_around
        };
        for _ in 0..r.u32()? {
            list.push((r.u32()? as usize, r.str()?));
        }
    }
    let mut combos = ComboSet::default();
    for _ in 0..r.u32()? {
        if let Some(c) = Combo::from_index(r.u32()? as usize) {
            combos.insert(c);
        }
    }
    o.combos = combos;
    for _ in 0..r.u32()? {
        let (step, k) = (r.u32()? as usize, r.u32()?);
        let bits = r.u8()?;
        o.injected.push(Injected {
            step,
            k,
            reached: bits & 1 != 0,
            failed: bits & 2 != 0,
        });
    }
    Some(o)
}

type Relayed = (FailureKind, Option<usize>, String, String);

fn read_failure(r: &mut Reader<'_>) -> Option<Relayed> {
    let kind = FailureKind::ALL.get(r.u8()? as usize)?.clone();
    let step = match r.u32()? {
        0 => None,
        n => Some(n as usize),
    };
    Some((kind, step, r.str()?, r.str()?))
}

/// Is `op` a step the harness runs in a forked child on this target?
pub fn forks_at<B: Target>(ex: &Executor<B>, op: &Op) -> bool {
    let kind = match op {
        Op::Shutdown if B::SHUTDOWN_IN_CHILD => StepKind::Shutdown,
        Op::Finalize => StepKind::Finalize,
        _ => return false,
    };
    ex.caps().steps.contains(kind) && !interp::in_forked_child() && !ex.model.ended()
}
