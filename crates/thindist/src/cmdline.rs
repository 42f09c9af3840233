//! Command lines as text: GNU-style response files (what lld and clang read after `@`) and the
//! quoting thindist uses when it writes its own.

use anyhow::{bail, Context, Result};
use std::path::Path;

/// Splits text the way LLVM's GNU tokenizer does for response files: whitespace separates
/// arguments, `'` and `"` group, and a backslash escapes the next character, also inside quotes.
pub fn tokenize_gnu(text: &str) -> Vec<String> {
    let mut args = Vec::new();
    let mut current = String::new();
    let mut in_token = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                in_token = true;
                if let Some(next) = chars.next() {
                    current.push(next);
                }
            }
            '\'' | '"' => {
                in_token = true;
                while let Some(q) = chars.next() {
                    if q == c {
                        break;
                    }
                    if q == '\\' {
                        if let Some(next) = chars.next() {
                            current.push(next);
                            continue;
                        }
                    }
                    current.push(q);
                }
            }
            c if c.is_whitespace() => {
                if in_token {
                    args.push(std::mem::take(&mut current));
                    in_token = false;
                }
            }
            c => {
                in_token = true;
                current.push(c);
            }
        }
    }
    if in_token {
        args.push(current);
    }
    args
}

/// Quotes one argument so that [`tokenize_gnu`] gives it back unchanged.
pub fn quote_gnu(arg: &str) -> String {
    if arg.is_empty() {
        return "\"\"".to_string();
    }
    let mut out = String::with_capacity(arg.len());
    for c in arg.chars() {
        if c.is_whitespace() || matches!(c, '\\' | '\'' | '"') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Writes arguments as a response file, one argument a line.
pub fn write_response_file(path: &Path, args: &[String]) -> Result<()> {
    let mut text = String::new();
    for arg in args {
        text.push_str(&quote_gnu(arg));
        text.push('\n');
    }
    std::fs::write(path, text).with_context(|| format!("writing response file {}", path.display()))
}

/// Replaces every `@file` argument by the arguments the file holds, recursively, as lld does.
/// A relative `@file` is read relative to the current directory.
pub fn expand_response_files(args: &[String]) -> Result<Vec<String>> {
    let mut out = Vec::with_capacity(args.len());
    expand_into(args, &mut out, 0)?;
    Ok(out)
}

fn expand_into(args: &[String], out: &mut Vec<String>, depth: usize) -> Result<()> {
    if depth > 20 {
        bail!("response files nest more than 20 deep (a file that includes itself?)");
    }
    for arg in args {
        match arg.strip_prefix('@') {
            Some(file) if !file.is_empty() => {
                let text = std::fs::read_to_string(file)
                    .with_context(|| format!("cannot read response file {file} (from {arg})"))?;
                expand_into(&tokenize_gnu(&text), out, depth + 1)?;
            }
            _ => out.push(arg.clone()),
        }
    }
    Ok(())
}

/// Renders a command for a person to copy into a POSIX shell.
pub fn shell_line(args: &[String]) -> String {
    shell_words::join(args)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn tokenizes_quotes_and_escapes() {
        assert_eq!(
            tokenize_gnu(r#"a "b c" 'd e' f\ g "h\"i" '' x"y"z"#),
            vec!["a", "b c", "d e", "f g", "h\"i", "", "xyz"]
        );
        assert_eq!(tokenize_gnu("  \n\t "), Vec::<String>::new());
    }

    #[test]
    fn expands_nested_response_files() {
        let dir = tempfile::tempdir().unwrap();
        let inner = dir.path().join("inner.rsp");
        std::fs::write(&inner, "c 'd e'\n").unwrap();
        let outer = dir.path().join("outer.rsp");
        std::fs::write(&outer, format!("b @{}\n", inner.display())).unwrap();
        let args = vec![
            "a".to_string(),
            format!("@{}", outer.display()),
            "f".to_string(),
        ];
        assert_eq!(
            expand_response_files(&args).unwrap(),
            vec!["a", "b", "c", "d e", "f"]
        );
    }

    #[test]
    fn reports_missing_response_file() {
        let err = expand_response_files(&["@/nonexistent/x.rsp".to_string()]).unwrap_err();
        assert!(format!("{err:#}").contains("/nonexistent/x.rsp"));
    }

    proptest! {
        #[test]
        fn quoting_round_trips(args in proptest::collection::vec(".*", 0..8)) {
            let text = args.iter().map(|a| quote_gnu(a)).collect::<Vec<_>>().join("\n");
            prop_assert_eq!(tokenize_gnu(&text), args);
        }

        #[test]
        fn tokenizer_never_panics(text in ".*") {
            let _ = tokenize_gnu(&text);
        }

        /// What `write_response_file` writes, `@FILE` expands back to; any file content
        /// expands without panicking.
        #[test]
        fn response_files_round_trip(args in proptest::collection::vec("[^@].*|", 0..8), text in ".{0,100}") {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("args.rsp");
            write_response_file(&path, &args).unwrap();
            let at = format!("@{}", path.display());
            prop_assert_eq!(expand_response_files(std::slice::from_ref(&at)).unwrap(), args);
            std::fs::write(&path, text).unwrap();
            let _ = expand_response_files(&[at]);
        }
    }
}
