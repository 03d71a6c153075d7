use std::collections::BTreeMap;
use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;
use crypy_agents::template::{diff, flatten, read_scoped, read_texts, scope_file, set_field, FILES};
use crypy_core::event::TemplateScope;
use crypy_core::time::format_utc;
use crypy_core::Event;
use crypy_eventstore::LogReader;
use serde_json::json;

use crate::args::TemplatesCommand;
use crate::out;

fn value(v: &Option<String>) -> &str {
    v.as_deref().unwrap_or("(none)")
}

pub fn run(cmd: TemplatesCommand) -> anyhow::Result<ExitCode> {
    let mut o = out::stdout();
    match cmd {
        TemplatesCommand::Diff { a, b } => {
            anyhow::ensure!(a.is_dir(), "{} is not a directory", a.display());
            anyhow::ensure!(b.is_dir(), "{} is not a directory", b.display());
            let (old, new) = (read_texts(&a)?, read_texts(&b)?);
            let mut files: Vec<(String, String, String)> = FILES
                .iter()
                .enumerate()
                .map(|(i, (name, _))| (name.to_string(), old[i].clone(), new[i].clone()))
                .collect();
            // A holder's or a pair's own file, where one side has none, is that side's shared file.
            let (scoped_a, scoped_b) = (read_scoped(&a)?, read_scoped(&b)?);
            let scopes: std::collections::BTreeSet<&TemplateScope> =
                scoped_a.iter().chain(&scoped_b).map(|(scope, _)| scope).collect();
            for scope in scopes {
                let shared = usize::from(!matches!(scope, TemplateScope::Holder(_))) + 1;
                let text = |side: &[(TemplateScope, String)], texts: &[String; 3]| {
                    side.iter().find(|(s, _)| s == scope).map_or(texts[shared].clone(), |(_, t)| t.clone())
                };
                files.push((scope_file(scope), text(&scoped_a, &old), text(&scoped_b, &new)));
            }
            let mut any = false;
            for (name, old, new) in files {
                let changes = diff(&old, &new).map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
                for c in changes {
                    any = true;
                    writeln!(o, "{name:<20} {:<32} {} → {}", c.key, value(&c.old), value(&c.new))?;
                }
            }
            if !any {
                writeln!(o, "no differences")?;
            }
        }
        TemplatesCommand::History { dir, json } => {
            let reader = LogReader::open(&dir.data_dir)
                .with_context(|| format!("cannot read the log in {}", dir.data_dir.display()))?;
            // The text in force of every template file, as the events set it.
            let mut last: BTreeMap<String, String> = BTreeMap::new();
            for e in reader.iter_from(1)? {
                let e = e?;
                let Event::TemplateChanged(t) = &e.event else { continue };
                let Some(new) = &t.new else { continue };
                let whole = t.key.ends_with(".toml");
                let file = match (&t.scope, whole) {
                    (TemplateScope::Desk, true) => t.key.clone(),
                    (scope, _) => scope_file(scope),
                };
                let before = last.get(&file).cloned();
                let changes = if whole {
                    // Whole files (recorded at each run's start) are compared field by field.
                    let fields = flatten(new).map_err(|m| anyhow::anyhow!("seq {}: {file}: {m}", e.seq))?;
                    match &before {
                        Some(old) => diff(old, new).map_err(|m| anyhow::anyhow!("{file}: {m}"))?,
                        None => fields
                            .into_iter()
                            .map(|(key, v)| crypy_agents::template::FieldChange { key, old: None, new: Some(v) })
                            .collect(),
                    }
                } else {
                    vec![crypy_agents::template::FieldChange {
                        key: t.key.clone(),
                        old: t.old.clone(),
                        new: t.new.clone(),
                    }]
                };
                let text = if whole {
                    Some(new.clone())
                } else {
                    let shared = match &t.scope {
                        TemplateScope::Desk => FILES[0].0,
                        TemplateScope::Holder(_) => FILES[1].0,
                        TemplateScope::Trader(_) => FILES[2].0,
                    };
                    let base = before.clone().or_else(|| last.get(shared).cloned()).unwrap_or_default();
                    set_field(&base, &t.key, new).ok().map(|(_, text)| text)
                };
                if let Some(text) = text {
                    last.insert(file.clone(), text);
                }
                let before = if whole { before } else { Some(String::new()) };
                if json {
                    for c in &changes {
                        writeln!(
                            o,
                            "{}",
                            json!({"seq": e.seq, "run": e.run, "time": e.time, "file": file, "key": c.key, "old": c.old, "new": c.new, "reason": t.reason})
                        )?;
                    }
                } else if before.is_none() {
                    writeln!(
                        o,
                        "seq {} run {} {}  {file}: first recorded, {} fields ({})",
                        e.seq,
                        e.run,
                        format_utc(e.time),
                        changes.len(),
                        t.reason
                    )?;
                } else if !changes.is_empty() {
                    writeln!(o, "seq {} run {} {}  {file}: {}", e.seq, e.run, format_utc(e.time), t.reason)?;
                    for c in &changes {
                        writeln!(o, "    {:<32} {} → {}", c.key, value(&c.old), value(&c.new))?;
                    }
                }
            }
        }
    }
    out::flush(&mut o)?;
    Ok(ExitCode::SUCCESS)
}
