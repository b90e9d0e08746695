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

/// Load a program as `backend` reads it: binary inputs for tvm-ffi decode
/// within its step kinds, as the `tvmffi` fuzz target does.
pub(super) fn load_for(path: &Path, form: Form, backend: BackendName) -> Result<Program, Bad> {
    match backend {
        BackendName::TvmFfi | BackendName::TvmFfiTied if !is_text(path, form) => Ok(decode_noting(
            path,
            &read(path)?,
            crate::backend::tvmffi::steps(),
        )),
        _ => load(path, is_text(path, form)).map_err(Bad),
    }
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
