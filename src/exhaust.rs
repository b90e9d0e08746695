//! `pytie exhaust`: the exhaustive bounded search of `pytie_core::exhaust`
//! with every (state, step) program checked on a real backend through the
//! executor (divergence, invariants, identity, teardown), as
//! [`harness::check`](crate::harness::check) does.

use std::path::Path;
use std::time::Duration;

use pytie_core::exec::Failure;
use pytie_core::exhaust::{self, Bounds, Progress, Stop, Summary};
use pytie_core::model::{Design, Model};
use pytie_core::program::{ObjKind, text};

use crate::harness::{Target, with_executor};

/// How a search ended.
pub enum Ended {
    /// Every program within the bounds passes.
    Passed(Summary),
    /// A shortest failing program (BFS order).
    Failed(Box<Failure>, Summary),
    /// More states than `Bounds::max_states`.
    TooManyStates(Summary),
}

/// Search within `b` on backend `B`, the model in design `design` (and the
/// backend's tying profile), every step kind `B` supports. `progress` gets
/// a report at most once a second. `Err`: the backend cannot be made.
pub fn run<B: Target>(
    b: &Bounds,
    design: Design,
    progress: &mut dyn FnMut(&Progress),
) -> Result<Ended, String> {
    with_executor::<B, _>(|ex| {
        B::for_campaign(&mut ex.backend);
        let caps = ex.caps();
        // What the backend's campaigns generate (`Target::steps`): on
        // pytie's runtime not `finalize`, each of whose programs forks.
        // Not `oom` (`exhaust::searched`).
        let kinds = exhaust::searched(caps.steps.and(B::steps()));
        let b = &Bounds {
            kinds: b.kinds_or(caps.kinds),
            ..*b
        };
        let saved = ex.model.clone();
        let mut model = Model::new(design);
        if !saved.tying() {
            model = model.without_tying();
        }
        ex.model = model.clone();
        let r = exhaust::explore(
            &model,
            b,
            kinds,
            &mut |p| crate::harness::run_watched(ex, p, "exhaust", &mut |_, _, _| {}).map(|_| ()),
            progress,
        );
        ex.model = saved;
        match r {
            Ok(s) => Ended::Passed(s),
            Err(Stop::Failure(f, s)) => Ended::Failed(f, s),
            Err(Stop::TooManyStates(s)) => Ended::TooManyStates(s),
        }
    })
}

/// A duration as `1h02m`, `3m05s` or `4.2s`.
pub fn human(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s >= 3600.0 {
        format!(
            "{}h{:02}m",
            (s / 3600.0) as u64,
            ((s % 3600.0) / 60.0) as u64
        )
    } else if s >= 60.0 {
        format!("{}m{:02}s", (s / 60.0) as u64, (s % 60.0) as u64)
    } else {
        format!("{s:.1}s")
    }
}

/// One progress line.
pub fn progress_line(p: &Progress) -> String {
    let rate = p.transitions as f64 / p.elapsed.as_secs_f64().max(1e-9);
    let left = p
        .remaining
        .map_or_else(|| "?".to_string(), |d| format!("~{}", human(d)));
    format!(
        "exhaust: {} states, {} programs checked ({rate:.0}/s); expanding depth {}/{}: {}/{} of its states done, {} found at depth {}; {} elapsed, {left} left (rough)",
        p.states,
        p.transitions,
        p.level,
        p.depth,
        p.level_done,
        p.level_size,
        p.next_level,
        p.level + 1,
        human(p.elapsed),
    )
}

/// The summary line(s).
pub fn summary_text(s: &Summary, b: &Bounds) -> String {
    let levels: Vec<String> = s.levels.iter().map(|n| n.to_string()).collect();
    let kinds = if b.kinds.is_empty() {
        "the backend's kinds".to_string()
    } else {
        b.kinds
            .iter()
            .map(|k| k.name())
            .collect::<Vec<_>>()
            .join(" ")
    };
    format!(
        "bounds: {} vars, {} holders, {} weak slots, {} handles, depth {}, kinds: {kinds} \
         (at most {} object(s) of kinds other than plain, dict, untied, legacy)\n\
         {} states (by depth: {}), {} programs checked ({} steps within the bounds), \
         depth reached {}, {}",
        b.vars,
        b.holders,
        b.weaks,
        b.handles,
        b.depth,
        b.extra_kind_objects,
        s.states,
        levels.join(" "),
        s.transitions,
        s.steps,
        s.depth_reached,
        human(s.elapsed)
    )
}

/// The failing program as a text regression, headed as `pytie regress`
/// heads one.
pub fn regression_text(f: &Failure, b: &Bounds, backend: &str) -> String {
    let mut h = f.regression_header();
    h += &format!(
        "# From pytie exhaust --backend {backend} --vars {} --holders {} --weaks {} --handles {} --depth {}: a shortest failing program.\n",
        b.vars, b.holders, b.weaks, b.handles, b.depth
    );
    format!("{h}{}", text::print(&f.program))
}

/// Write the regression; the error said plainly.
pub fn save(path: &Path, body: &str) -> Result<(), String> {
    std::fs::write(path, body).map_err(|e| format!("{}: cannot write: {e}", path.display()))
}

/// The implementation `pytie exhaust` checks.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BackendArg {
    /// pytie's own runtime (design S).
    Pytie,
    /// apache-tvm-ffi (scripts/setup-tvmffi), recorded findings worked
    /// around, within its step kinds.
    TvmFfi,
}

/// The object kinds `new` takes.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum KindsArg {
    /// Those the backend makes through paths of their own (pytie's
    /// runtime: the four classic ones and `fragile`; tvm-ffi: all twelve).
    Backend,
    /// One per class the model tells apart: plain, dict, untied, legacy.
    Classic,
    /// Every kind of the language.
    All,
}

/// The model's design.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DesignArg {
    S,
    U,
}

/// `pytie exhaust`'s options.
#[derive(clap::Args)]
pub struct ExhaustArgs {
    /// Vars v0..v(N-1) the steps may use.
    #[arg(long, default_value_t = Bounds::default().vars)]
    pub vars: u8,
    /// Holders h0..h(N-1).
    #[arg(long, default_value_t = Bounds::default().holders)]
    pub holders: u8,
    /// Weak slots w0..w(N-1).
    #[arg(long, default_value_t = Bounds::default().weaks)]
    pub weaks: u8,
    /// Handles made in total: a `new` that would make more is not taken.
    #[arg(long, default_value_t = Bounds::default().handles)]
    pub handles: u32,
    /// The longest program.
    #[arg(long, default_value_t = Bounds::default().depth)]
    pub depth: usize,
    /// The object kinds `new` takes.
    #[arg(long, value_enum, default_value = "backend")]
    pub kinds: KindsArg,
    /// Objects of kinds other than plain, dict, untied and legacy one
    /// program may make.
    #[arg(long, default_value_t = Bounds::default().extra_kind_objects)]
    pub extra_kind_objects: u32,
    /// Stop (exit 2) when more distinct states than this are found.
    #[arg(long, default_value_t = Bounds::default().max_states)]
    pub max_states: usize,
    /// The implementation to check.
    #[arg(long, value_enum, default_value = "pytie")]
    pub backend: BackendArg,
    /// The model's design (pytie's runtime implements S: U diverges).
    #[arg(long, value_enum, default_value = "S", ignore_case = true)]
    pub design: DesignArg,
    /// Where to write the shortest failing program, as a text regression.
    #[arg(long, default_value = "exhaust-failure.pytie")]
    pub save: std::path::PathBuf,
    /// No progress lines on standard error.
    #[arg(long)]
    pub quiet: bool,
}

/// `pytie exhaust`: exit 0 when every program within the bounds passes, 1
/// on a failure (report printed, regression saved), 2 on bad usage, a
/// backend that cannot be loaded, or too many states.
pub fn command(a: &ExhaustArgs) -> std::process::ExitCode {
    use std::process::ExitCode;
    let b = Bounds {
        vars: a.vars,
        holders: a.holders,
        weaks: a.weaks,
        handles: a.handles,
        depth: a.depth,
        kinds: match a.kinds {
            KindsArg::Backend => &[],
            KindsArg::Classic => &ObjKind::CLASSIC,
            KindsArg::All => &ObjKind::ALL,
        },
        extra_kind_objects: a.extra_kind_objects,
        max_states: a.max_states,
    };
    if let Err(e) = b.validate() {
        eprintln!("pytie: {e}");
        return ExitCode::from(2);
    }
    let design = match a.design {
        DesignArg::S => Design::S,
        DesignArg::U => Design::U,
    };
    let quiet = a.quiet;
    let mut progress = |p: &Progress| {
        if !quiet {
            eprintln!("{}", progress_line(p));
        }
    };
    let (r, name) = match a.backend {
        BackendArg::Pytie => (
            run::<crate::backend::pytie::PytieBackend>(&b, design, &mut progress),
            "pytie",
        ),
        BackendArg::TvmFfi => (
            run::<crate::backend::tvmffi::TvmFfiBackend>(&b, design, &mut progress),
            "tvm-ffi",
        ),
    };
    match r {
        Err(e) => {
            eprintln!("pytie: {e}");
            ExitCode::from(2)
        }
        Ok(Ended::Passed(s)) => {
            println!("{}", summary_text(&s, &b));
            println!("pass: every program within the bounds holds");
            ExitCode::SUCCESS
        }
        Ok(Ended::TooManyStates(s)) => {
            println!("{}", summary_text(&s, &b));
            eprintln!(
                "pytie: more than {} states (--max-states): stopped before exhausting the bounds; \
                 narrow them or raise --max-states",
                b.max_states
            );
            ExitCode::from(2)
        }
        Ok(Ended::Failed(f, s)) => {
            println!("{}", summary_text(&s, &b));
            println!(
                "FAIL: a shortest failing program ({} steps)\n{f}",
                f.program.ops.len()
            );
            match save(&a.save, &regression_text(&f, &b, name)) {
                Ok(()) => println!("wrote {}", a.save.display()),
                Err(e) => eprintln!("pytie: {e}"),
            }
            ExitCode::from(1)
        }
    }
}
