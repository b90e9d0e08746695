//! Reading programs: files or standard input, text or binary, bounded in
//! size, and writing results.

use std::io::Write;
use std::path::{Path, PathBuf};

use pytie_core::program::{Program, binary, text};

use super::{BackendName, Bad, Form};
pub(super) fn is_text(path: &Path, form: Form) -> bool {
    if form.text {
        true
    } else if form.binary {
        false
    } else {
        // Standard input is text unless `--binary`.
        path == Path::new("-") || path.extension().is_some_and(|e| e == "pytie")
    }
}

/// The largest input file read (`--binary /dev/zero` must not read
/// forever): 64 MiB, far above the step limit's text (1,000,000 lines).
const MAX_INPUT: u64 = 64 << 20;

pub(super) fn read(path: &Path) -> Result<Vec<u8>, Bad> {
    use std::io::Read;
    let cannot = |e: std::io::Error| Bad(format!("{}: cannot read: {e}", path.display()));
    let mut data = Vec::new();
    // `-` is standard input (`pytie run - < prog.pytie`, text unless
    // `--binary`).
    let source: Box<dyn Read> = if path == Path::new("-") {
        Box::new(std::io::stdin())
    } else {
        Box::new(std::fs::File::open(path).map_err(cannot)?)
    };
    source
        .take(MAX_INPUT + 1)
        .read_to_end(&mut data)
        .map_err(cannot)?;
    if data.len() as u64 > MAX_INPUT {
        return Err(Bad(format!(
            "{}: larger than {} MiB, the most pytie reads",
            path.display(),
            MAX_INPUT >> 20
        )));
    }
    if data.is_empty() {
        return Err(Bad(format!("{}: empty file", path.display())));
    }
    Ok(data)
}

/// Load a program in the form `form` says (or its extension).
pub fn load(path: &Path, text_form: bool) -> Result<Program, String> {
    let data = read(path).map_err(|Bad(e)| e)?;
    if text_form {
        text::parse_bytes(&data).map_err(|e| format!("{}:{e}", path.display()))
    } else {
        Ok(decode_noting(
            path,
            &data,
            pytie_core::program::StepSet::ALL,
        ))
    }
}

/// Load one program as `pytie run` reads it for pytie's runtime: a binary
/// input within the kinds the `lifecycle` target decodes to (all but
/// `pyweak` and `finalize`). A sequence file is an error here.
pub fn load_pytie(path: &Path, text_form: bool) -> Result<Program, String> {
    if text_form {
        return load(path, true);
    }
    let data = read(path).map_err(|Bad(e)| e)?;
    if binary::sequence(&data).is_some() {
        return Err(format!(
            "{}: a sequence of programs: `pytie run --binary` runs it",
            path.display()
        ));
    }
    Ok(decode_noting(
        path,
        &data,
        <crate::backend::pytie::PytieBackend as crate::harness::Target>::steps(),
    ))
}

/// Decode a binary program within `allowed`, saying on standard error
/// what of `data` was ignored (bytes past the 256th step, or an
/// incomplete last step): nothing is dropped silently.
pub(super) fn decode_noting(
    path: &Path,
    data: &[u8],
    allowed: pytie_core::program::StepSet,
) -> Program {
    let (p, used) = binary::decode_counted(data, allowed);
    let ignored = data.len() - used;
    if ignored > 0 {
        let why = if p.ops.len() == binary::MAX_STEPS {
            format!("binary programs hold at most {} steps", binary::MAX_STEPS)
        } else {
            "an incomplete last step".to_string()
        };
        eprintln!(
            "pytie: {}: {} steps; {ignored} trailing bytes ignored: {why}",
            path.display(),
            p.ops.len()
        );
    }
    p
}

/// Load the programs of a file as `backend` reads them: binary inputs
/// decode within the step kinds its fuzz target decodes to (`tvmffi`: all;
/// `lifecycle`: all but `pyweak` and `finalize`), as that target does; a
/// binary *sequence* (`binary::SEQUENCE_MAGIC`, what a target saves when a
/// failure does not replay alone) is several programs, run in order in one
/// process. A text file is one program.
pub(super) fn load_for(path: &Path, form: Form, backend: BackendName) -> Result<Vec<Program>, Bad> {
    if is_text(path, form) {
        return load(path, true).map(|p| vec![p]).map_err(Bad);
    }
    let allowed = match backend {
        BackendName::TvmFfi | BackendName::TvmFfiTied => crate::backend::tvmffi::steps(),
        BackendName::Pytie => {
            <crate::backend::pytie::PytieBackend as crate::harness::Target>::steps()
        }
    };
    let data = read(path)?;
    Ok(match binary::sequence(&data) {
        Some(parts) => parts
            .into_iter()
            .map(|p| decode_noting(path, p, allowed))
            .collect(),
        None => vec![decode_noting(path, &data, allowed)],
    })
}

pub(super) fn write_out(output: Option<&Path>, bytes: &[u8]) -> Result<(), Bad> {
    match output {
        Some(p) => {
            std::fs::write(p, bytes).map_err(|e| Bad(format!("{}: cannot write: {e}", p.display())))
        }
        None => std::io::stdout()
            .write_all(bytes)
            .map_err(|e| Bad(format!("cannot write to standard output: {e}"))),
    }
}

/// The program files `paths` name: files as given, directories recursed
/// (sorted; dotfiles and `.md`/`.txt` files in them skipped).
pub fn program_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, String> {
    let mut out = Vec::new();
    for p in paths {
        let meta =
            std::fs::metadata(p).map_err(|e| format!("{}: cannot read: {e}", p.display()))?;
        if !meta.is_dir() {
            out.push(p.clone());
            continue;
        }
        let mut found = Vec::new();
        let mut stack = vec![p.clone()];
        while let Some(d) = stack.pop() {
            let entries =
                std::fs::read_dir(&d).map_err(|e| format!("{}: cannot read: {e}", d.display()))?;
            for entry in entries {
                let f = entry
                    .map_err(|e| format!("{}: cannot read: {e}", d.display()))?
                    .path();
                let name = f.file_name().map(|n| n.to_string_lossy().into_owned());
                let skipped = name.is_none_or(|n| n.starts_with('.'))
                    || f.extension().is_some_and(|e| e == "md" || e == "txt");
                if f.is_dir() {
                    stack.push(f);
                } else if !skipped {
                    found.push(f);
                }
            }
        }
        found.sort();
        out.extend(found);
    }
    Ok(out)
}
