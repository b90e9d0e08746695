//! `pytie coverage`: the transitions the programs take, and with
//! `--reachable` the combinations they miss.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use pytie_core::program::text;

use super::input::{is_text, load, program_files, write_out};
use super::{Bad, Form};
/// `pytie coverage --reachable DEPTH`: the combinations the model reaches
/// within the default slots and `depth` that none of the programs takes.
fn uncovered(
    counts: &pytie_core::exec::coverage::Counts,
    depth: usize,
    write: Option<&Path>,
) -> Result<ExitCode, Bad> {
    use pytie_core::exhaust::{Bounds, Stop, reachable_combos};
    let bounds = Bounds {
        depth,
        ..Bounds::default()
    };
    let (reachable, summary) = match reachable_combos(&bounds) {
        Ok(r) => r,
        Err(Stop::TooManyStates(s)) => {
            return Err(Bad(format!(
                "more than {} states within depth {depth}: choose a smaller depth",
                s.states
            )));
        }
        Err(Stop::Failure(f, _)) => return Err(Bad(format!("the model failed: {f}"))),
    };
    let taken = counts.combos_reached();
    let missed: Vec<_> = reachable
        .iter()
        .filter(|(c, _)| !taken.contains(*c))
        .collect();
    out!(
        "reachable within {} vars, {} holders, {} weak slot(s), {} handles, depth {depth} \
         ({} states): {} combinations; the programs take {} of them",
        bounds.vars,
        bounds.holders,
        bounds.weaks,
        bounds.handles,
        summary.states,
        reachable.len(),
        reachable.len() - missed.len()
    );
    for (c, p) in &missed {
        let ops: Vec<String> = p.ops.iter().map(|op| op.to_string()).collect();
        out!("  missed: {}  ({})", c.name(), ops.join("; "));
        if let Some(dir) = write {
            std::fs::create_dir_all(dir)
                .map_err(|e| Bad(format!("cannot create {}: {e}", dir.display())))?;
            let name = c.name().replace([' ', '_'], "-");
            let file = dir.join(format!("{name}.pytie"));
            let text = format!(
                "# Coverage: the shortest program (pytie coverage --reachable {depth}) that takes\n\
                 # the transition `{}`{}.\n{}",
                c.name(),
                if c.foreign() {
                    " (on a thread without the GIL)"
                } else {
                    ""
                },
                text::print(p)
            );
            write_out(Some(&file), text.as_bytes())?;
        }
    }
    Ok(if missed.is_empty() || write.is_some() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// `pytie coverage`; with `reachable` (`--reachable DEPTH`, `--write-missing
/// DIR`) also [`uncovered`] on the same counts.
pub(super) fn coverage(
    paths: &[PathBuf],
    form: Form,
    output: &Path,
    png: bool,
    reachable: Option<(usize, Option<&Path>)>,
) -> Result<ExitCode, Bad> {
    use pytie_core::exec::coverage::{Counts, Edge, to_dot};
    let files = program_files(paths).map_err(Bad)?;
    if files.is_empty() {
        return Err(Bad("no program files found".into()));
    }
    let mut programs = Vec::new();
    for f in &files {
        programs.push((f, load(f, is_text(f, form)).map_err(Bad)?));
    }
    // The model says which transitions each program takes: no backend runs.
    let mut counts = Counts::default();
    for (_, p) in &programs {
        counts.add_program(p);
    }
    let shown: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    let title = format!(
        "pytie: state-machine transitions taken by {} programs ({})\nred: never taken",
        counts.programs,
        shown.join(", ")
    );
    out!("{} programs ({} files)", counts.programs, files.len());
    for e in Edge::ALL {
        out!("  {:<17} {:>5}", e.name(), counts.get(e));
    }
    let never: Vec<&str> = Edge::ALL
        .iter()
        .filter(|e| counts.get(**e) == 0)
        .map(|e| e.name())
        .collect();
    if never.is_empty() {
        out!("every transition is taken");
    } else {
        out!("never taken: {}", never.join(", "));
    }
    let combos = counts.combos_reached();
    out!(
        "by trigger and thread: {} combinations of transition, trigger (step or teardown), \
         cascade and shutdown taken",
        combos.len()
    );
    for c in combos.iter() {
        let thread = if c.foreign() {
            "foreign thread"
        } else {
            "interpreter's thread"
        };
        out!("  {:<48} {:>5}  {thread}", c.name(), counts.combo(c));
    }
    let dot_file = output.with_extension("dot");
    write_out(Some(&dot_file), to_dot(&counts, &title).as_bytes())?;
    out!("wrote {}", dot_file.display());
    let mut formats = vec!["svg"];
    if png {
        formats.push("png");
    }
    for fmt in formats {
        let target = output.with_extension(fmt);
        let result = std::process::Command::new("dot")
            .arg(format!("-T{fmt}"))
            .arg(&dot_file)
            .arg("-o")
            .arg(&target)
            .output();
        match result {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Bad(format!(
                    "cannot render {}: Graphviz's `dot` is not installed (Debian: apt-get install graphviz); {} is written",
                    target.display(),
                    dot_file.display()
                )));
            }
            Err(e) => return Err(Bad(format!("cannot run `dot`: {e}"))),
            Ok(o) if !o.status.success() => {
                return Err(Bad(format!(
                    "`dot -T{fmt}` failed ({}): {}",
                    o.status,
                    String::from_utf8_lossy(&o.stderr).trim()
                )));
            }
            Ok(_) => out!("wrote {}", target.display()),
        }
    }
    match reachable {
        Some((depth, write)) => uncovered(&counts, depth, write),
        None => Ok(ExitCode::SUCCESS),
    }
}
