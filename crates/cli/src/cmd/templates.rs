use std::collections::BTreeMap;
use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;
use crypy_agents::template::{diff, flatten, read_texts, FILES};
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
            let mut any = false;
            for (i, (name, _)) in FILES.iter().enumerate() {
                let changes = diff(&old[i], &new[i]).map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
                for c in changes {
                    any = true;
                    writeln!(o, "{name:<12} {:<32} {} → {}", c.key, value(&c.old), value(&c.new))?;
                }
            }
            if !any {
                writeln!(o, "no differences")?;
            }
        }
        TemplatesCommand::History { dir, json } => {
            let reader = LogReader::open(&dir.data_dir)
                .with_context(|| format!("cannot read the log in {}", dir.data_dir.display()))?;
            let mut last: BTreeMap<String, String> = BTreeMap::new();
            for e in reader.iter_from(1)? {
                let e = e?;
                let Event::TemplateChanged(t) = &e.event else { continue };
                let Some(new) = &t.new else { continue };
                let file = t.key.clone();
                let before = last.get(&file).cloned();
                // Whole files (recorded at each run's start) are compared field by field.
                let changes = match (&before, flatten(new)) {
                    (Some(old), Ok(_)) => diff(old, new).map_err(|m| anyhow::anyhow!("{file}: {m}"))?,
                    (None, Ok(fields)) => fields
                        .into_iter()
                        .map(|(key, v)| crypy_agents::template::FieldChange { key, old: None, new: Some(v) })
                        .collect(),
                    (_, Err(_)) => vec![crypy_agents::template::FieldChange {
                        key: file.clone(),
                        old: t.old.clone(),
                        new: t.new.clone(),
                    }],
                };
                last.insert(file.clone(), new.clone());
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
