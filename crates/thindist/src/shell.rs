//! Reading POSIX shell command text as kbuild writes it: several commands joined by `;`, `&&`
//! or `|`, with single quotes, double quotes and backslashes.

/// Splits shell text into commands, each a list of words with quoting removed. Unquoted `;`,
/// `&`, `|` and newlines separate commands. Runs of ordinary characters are copied whole: a
/// kernel command is a few kilobytes, and copying it a character at a time was a quarter of
/// drafting a kernel link's jobs.
pub fn split_commands(text: &str) -> Vec<Vec<String>> {
    let mut commands = Vec::new();
    let mut words: Vec<String> = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let end_word = |words: &mut Vec<String>, word: &mut String, in_word: &mut bool| {
        if *in_word {
            words.push(std::mem::take(word));
            *in_word = false;
        }
    };
    let mut pos = 0;
    while let Some(c) = text[pos..].chars().next() {
        pos += c.len_utf8();
        match c {
            '\'' => {
                in_word = true;
                let rest = &text[pos..];
                let end = rest.find('\'').unwrap_or(rest.len());
                word.push_str(&rest[..end]);
                pos = (pos + end + 1).min(text.len());
            }
            '"' => {
                in_word = true;
                loop {
                    let rest = &text[pos..];
                    let Some(end) = rest.find(['"', '\\']) else {
                        word.push_str(rest);
                        pos = text.len();
                        break;
                    };
                    word.push_str(&rest[..end]);
                    pos += end + 1;
                    if rest[end..].starts_with('"') {
                        break;
                    }
                    match text[pos..].chars().next() {
                        Some(escaped @ ('"' | '\\' | '$' | '`')) => {
                            word.push(escaped);
                            pos += 1;
                        }
                        _ => word.push('\\'),
                    }
                }
            }
            '\\' => {
                in_word = true;
                match text[pos..].chars().next() {
                    Some('\n') => pos += 1,
                    Some(next) => {
                        word.push(next);
                        pos += next.len_utf8();
                    }
                    None => {}
                }
            }
            ';' | '&' | '|' | '\n' => {
                end_word(&mut words, &mut word, &mut in_word);
                if !words.is_empty() {
                    commands.push(std::mem::take(&mut words));
                }
            }
            c if c.is_whitespace() => end_word(&mut words, &mut word, &mut in_word),
            c => {
                in_word = true;
                let rest = &text[pos..];
                let end = rest.find(is_special).unwrap_or(rest.len());
                word.push(c);
                word.push_str(&rest[..end]);
                pos += end;
            }
        }
    }
    end_word(&mut words, &mut word, &mut in_word);
    if !words.is_empty() {
        commands.push(words);
    }
    commands
}

/// Whether `c` ends a run of ordinary characters in [`split_commands`].
fn is_special(c: char) -> bool {
    matches!(c, '\'' | '"' | '\\' | ';' | '&' | '|' | '\n') || c.is_whitespace()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The splitter as it was first written, a character at a time: what [`split_commands`] must
    /// still answer.
    fn split_by_char(text: &str) -> Vec<Vec<String>> {
        let mut commands = Vec::new();
        let mut words: Vec<String> = Vec::new();
        let mut word = String::new();
        let mut in_word = false;
        let mut chars = text.chars().peekable();
        let end_word = |words: &mut Vec<String>, word: &mut String, in_word: &mut bool| {
            if *in_word {
                words.push(std::mem::take(word));
                *in_word = false;
            }
        };
        while let Some(c) = chars.next() {
            match c {
                '\'' => {
                    in_word = true;
                    for q in chars.by_ref() {
                        if q == '\'' {
                            break;
                        }
                        word.push(q);
                    }
                }
                '"' => {
                    in_word = true;
                    while let Some(q) = chars.next() {
                        match q {
                            '"' => break,
                            '\\' if matches!(chars.peek(), Some('"' | '\\' | '$' | '`')) => {
                                word.push(chars.next().unwrap_or('\\'))
                            }
                            _ => word.push(q),
                        }
                    }
                }
                '\\' => {
                    in_word = true;
                    match chars.next() {
                        Some('\n') | None => {}
                        Some(next) => word.push(next),
                    }
                }
                ';' | '&' | '|' | '\n' => {
                    end_word(&mut words, &mut word, &mut in_word);
                    if !words.is_empty() {
                        commands.push(std::mem::take(&mut words));
                    }
                }
                c if c.is_whitespace() => end_word(&mut words, &mut word, &mut in_word),
                c => {
                    in_word = true;
                    word.push(c);
                }
            }
        }
        end_word(&mut words, &mut word, &mut in_word);
        if !words.is_empty() {
            commands.push(words);
        }
        commands
    }

    #[test]
    fn splits_kbuild_command() {
        let cmds = split_commands(
            r#"clang-22 -DKBUILD_MODFILE='"kernel/fork"' -DX="a b" -c -o kernel/fork.o kernel/fork.c ; ./tools/objtool/objtool --hacks=jump_label kernel/fork.o && echo ok"#,
        );
        assert_eq!(cmds.len(), 3);
        assert_eq!(cmds[0][1], "-DKBUILD_MODFILE=\"kernel/fork\"");
        assert_eq!(cmds[0][2], "-DX=a b");
        assert_eq!(cmds[0].last().unwrap(), "kernel/fork.c");
        assert_eq!(cmds[1][0], "./tools/objtool/objtool");
    }

    proptest! {
        /// Text of shell characters, quotes and escapes splits as it did a character at a time.
        #[test]
        fn splits_as_a_character_at_a_time(text in "([a-z ;&|\n\\\\'\"$`]|\u{a0}|\u{e9}){0,40}") {
            prop_assert_eq!(split_commands(&text), split_by_char(&text));
        }

        /// Never panics, either.
        #[test]
        fn any_text_splits_as_a_character_at_a_time(text in ".*") {
            prop_assert_eq!(split_commands(&text), split_by_char(&text));
        }

        /// Words quoted with single quotes come back unchanged.
        #[test]
        fn single_quoted_words_round_trip(words in proptest::collection::vec("[^']*", 1..6)) {
            let text = words.iter().map(|w| format!("'{w}'")).collect::<Vec<_>>().join(" ");
            prop_assert_eq!(split_commands(&text), vec![words]);
        }
    }
}
