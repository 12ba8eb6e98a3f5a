//! A run's report and its three renderings: a human table, JSON, JUnit XML.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::case::{Failure, Outcome, Suite};
use crate::subject::Identity;
use crate::sys;

/// The whole result of a run, with everything needed to cite it.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// `berth-conformance`.
    pub tool: String,
    /// The suite's version.
    pub tool_version: String,
    /// The plugin under test, if any (loader-only runs have none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plugin: Option<Identity>,
    /// Where the fixture plugins for PL cases were looked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fixtures: Option<String>,
    /// The host the run happened on.
    pub host: Host,
    /// How often idempotent calls were repeated.
    pub repeat: usize,
    /// When the run started, UTC, ISO 8601.
    pub started_at: String,
    /// Totals.
    pub summary: Summary,
    /// One entry per case, in run order.
    pub cases: Vec<CaseReport>,
}

/// The host a run happened on.
#[derive(Debug, Clone, Serialize)]
pub struct Host {
    /// `uname -r`.
    pub kernel_release: String,
    /// The effective uid the suite ran as.
    pub euid: u32,
    /// The kernel and host features that gate cases (see
    /// [`crate::features`]): name → present.
    pub features: BTreeMap<String, bool>,
}

impl Host {
    /// This host (its features are found once per process).
    pub fn current() -> Host {
        Host { kernel_release: sys::kernel_release(), euid: sys::euid(), features: crate::features::detect() }
    }

    /// The features that are present (`true`) or absent (`false`), in the
    /// order of [`crate::features::ALL`], then any others by name.
    pub fn features_that_are(&self, present: bool) -> Vec<&str> {
        let known = crate::features::ALL.iter().copied().filter(|n| self.features.get(*n) == Some(&present));
        let others = self
            .features
            .iter()
            .filter(|(n, p)| **p == present && !crate::features::ALL.contains(&n.as_str()))
            .map(|(n, _)| n.as_str());
        known.chain(others).collect()
    }

    /// One line: `features: overlay btrfs … (absent: zfs …)`.
    pub fn features_line(&self) -> String {
        let absent = self.features_that_are(false);
        let mut s = format!("features: {}", self.features_that_are(true).join(" "));
        if !absent.is_empty() {
            let _ = write!(s, " (absent: {})", absent.join(" "));
        }
        s
    }
}

/// Totals of a run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// Cases run.
    pub total: usize,
    /// Cases passed.
    pub passed: usize,
    /// Cases failed.
    pub failed: usize,
    /// Cases skipped.
    pub skipped: usize,
    /// Wall time of the run in milliseconds.
    pub millis: u64,
}

/// The result of one case.
#[derive(Debug, Clone, Serialize)]
pub struct CaseReport {
    /// Stable ID, e.g. `ST-01`.
    pub id: String,
    /// The suite (`storage`, `plugin`, ...).
    pub suite: Suite,
    /// Its one line.
    pub description: String,
    /// `pass`, `fail` or `skip`.
    pub result: String,
    /// One line: the failure, or the reason for a skip.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The failure, structured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure: Option<Failure>,
    /// Wall time in milliseconds (setup and teardown included).
    pub millis: f64,
}

impl CaseReport {
    /// The report of a case that ended with `outcome` after `millis`.
    pub fn new(id: &str, suite: Suite, description: &str, outcome: &Outcome, millis: f64) -> Self {
        let (message, failure) = match outcome {
            Outcome::Pass => (None, None),
            Outcome::Fail(f) => (Some(one_line(&f.to_string())), Some(f.clone())),
            Outcome::Skip(r) => (Some(one_line(r)), None),
        };
        CaseReport {
            id: id.into(),
            suite,
            description: description.into(),
            result: outcome.label().into(),
            message,
            failure,
            millis,
        }
    }

    /// Whether the case failed.
    pub fn failed(&self) -> bool {
        self.result == "fail"
    }
}

fn one_line(s: &str) -> String {
    s.split('\n').map(str::trim_end).filter(|l| !l.is_empty()).collect::<Vec<_>>().join(" / ")
}

impl Report {
    /// Whether any case failed.
    pub fn any_failed(&self) -> bool {
        self.summary.failed > 0
    }

    /// The case with `id`, if it ran.
    pub fn case(&self, id: &str) -> Option<&CaseReport> {
        self.cases.iter().find(|c| c.id == id)
    }

    /// The IDs of the failed cases, in run order.
    pub fn failed_ids(&self) -> Vec<&str> {
        self.cases.iter().filter(|c| c.failed()).map(|c| c.id.as_str()).collect()
    }

    /// Who and where, in one line.
    pub fn headline(&self) -> String {
        let mut s = format!("{} {}", self.tool, self.tool_version);
        if let Some(p) = &self.plugin {
            if let Some(address) = &p.address {
                let implements = p.activate.as_deref().unwrap_or_default().join(", ");
                let _ = write!(s, " | plugin {} (remote {address}, implements [{implements}])", p.name);
            } else {
                let _ = write!(s, " | plugin {} {} (plugin-api {}", p.name, p.version, p.api_version);
                if let Some(sha) = &p.sha256 {
                    let _ = write!(s, ", sha256 {sha}");
                }
                s.push(')');
            }
        }
        let _ = write!(s, " | kernel {} | euid {}", self.host.kernel_release, self.host.euid);
        s
    }

    /// The table for people.
    pub fn to_human(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "{}", self.headline());
        if let Some(path) = self.plugin.as_ref().and_then(|p| p.path.as_ref()) {
            let _ = writeln!(out, "plugin file: {path}");
        }
        let _ = writeln!(out, "host {}", self.host.features_line());
        let _ = writeln!(out);
        let rows: Vec<[String; 4]> = self
            .cases
            .iter()
            .map(|c| {
                let result = match c.result.as_str() {
                    "fail" => "FAIL".to_string(),
                    other => other.to_string(),
                };
                [c.id.clone(), result, fmt_millis(c.millis), c.message.clone().unwrap_or_default()]
            })
            .collect();
        let header = ["ID", "RESULT", "TIME", "MESSAGE"].map(String::from);
        let mut widths = [0usize; 3];
        for row in std::iter::once(&header).chain(&rows) {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        for row in std::iter::once(&header).chain(&rows) {
            let line = format!(
                "{:<w0$}  {:<w1$}  {:>w2$}  {}",
                row[0],
                row[1],
                row[2],
                row[3],
                w0 = widths[0],
                w1 = widths[1],
                w2 = widths[2]
            );
            let _ = writeln!(out, "{}", line.trim_end());
        }
        let s = &self.summary;
        // The last line is the plain summary CI systems read, alone.
        let _ = writeln!(out, "\n{} cases in {:.2}s", s.total, s.millis as f64 / 1000.0);
        let _ = writeln!(out, "{} passed, {} failed, {} skipped", s.passed, s.failed, s.skipped);
        out
    }

    /// Pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("reports serialize") + "\n"
    }

    /// JUnit XML: one `<testsuite>` per suite, `classname="berth.<suite>"`,
    /// properties naming the plugin, tool and kernel.
    pub fn to_junit(&self) -> String {
        let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
        let s = &self.summary;
        let _ = writeln!(
            out,
            "<testsuites name=\"berth-conformance\" tests=\"{}\" failures=\"{}\" errors=\"0\" skipped=\"{}\" time=\"{:.3}\">",
            s.total,
            s.failed,
            s.skipped,
            s.millis as f64 / 1000.0
        );
        let mut props = vec![
            ("berth-conformance.version", self.tool_version.clone()),
            ("host.kernel_release", self.host.kernel_release.clone()),
            ("host.euid", self.host.euid.to_string()),
            ("host.features", self.host.features_that_are(true).join(",")),
            ("host.features.absent", self.host.features_that_are(false).join(",")),
            ("repeat", self.repeat.to_string()),
        ];
        if let Some(p) = &self.plugin {
            props.push(("plugin.name", p.name.clone()));
            if !p.version.is_empty() {
                props.push(("plugin.version", p.version.clone()));
            }
            if !p.api_version.is_empty() {
                props.push(("plugin.api_version", p.api_version.clone()));
            }
            props.push(("plugin.transport", p.transport.clone()));
            if let Some(address) = &p.address {
                props.push(("plugin.address", address.clone()));
            }
            if let Some(implements) = &p.activate {
                props.push(("plugin.activate", implements.join(",")));
            }
            if let Some(path) = &p.path {
                props.push(("plugin.path", path.clone()));
            }
            if let Some(sha) = &p.sha256 {
                props.push(("plugin.sha256", sha.clone()));
            }
        }
        if let Some(f) = &self.fixtures {
            props.push(("fixtures", f.clone()));
        }
        for suite in Suite::ALL {
            let cases: Vec<&CaseReport> = self.cases.iter().filter(|c| c.suite == suite).collect();
            if cases.is_empty() {
                continue;
            }
            let failures = cases.iter().filter(|c| c.result == "fail").count();
            let skipped = cases.iter().filter(|c| c.result == "skip").count();
            let secs: f64 = cases.iter().map(|c| c.millis).sum::<f64>() / 1000.0;
            let _ = writeln!(
                out,
                "  <testsuite name=\"berth.{suite}\" tests=\"{}\" failures=\"{failures}\" errors=\"0\" skipped=\"{skipped}\" time=\"{secs:.3}\" timestamp=\"{}\">",
                cases.len(),
                attr(self.started_at.trim_end_matches('Z')),
            );
            out.push_str("    <properties>\n");
            for (k, v) in &props {
                let _ = writeln!(out, "      <property name=\"{}\" value=\"{}\"/>", attr(k), attr(v));
            }
            out.push_str("    </properties>\n");
            for c in cases {
                let _ = write!(
                    out,
                    "    <testcase classname=\"berth.{suite}\" name=\"{}\" time=\"{:.3}\"",
                    attr(&format!("{} {}", c.id, c.description)),
                    c.millis / 1000.0
                );
                match (c.result.as_str(), &c.message) {
                    ("fail", msg) => {
                        let msg = msg.clone().unwrap_or_default();
                        let kind = c
                            .failure
                            .as_ref()
                            .and_then(|f| f.error_kind)
                            .map(|k| k.as_str())
                            .unwrap_or("assertion");
                        let _ = writeln!(out, ">");
                        let _ =
                            write!(out, "      <failure message=\"{}\" type=\"{}\">", attr(&msg), attr(kind));
                        if let Some(f) = &c.failure {
                            let _ = write!(
                                out,
                                "{}",
                                text(&format!(
                                    "step: {}\nexpected: {}\nactual: {}\nerror kind: {}\n",
                                    f.step,
                                    f.expected,
                                    f.actual,
                                    f.error_kind.map(|k| k.as_str()).unwrap_or("-")
                                ))
                            );
                        } else {
                            let _ = write!(out, "{}", text(&msg));
                        }
                        out.push_str("</failure>\n    </testcase>\n");
                    }
                    ("skip", msg) => {
                        let _ = writeln!(out, ">");
                        let _ = writeln!(
                            out,
                            "      <skipped message=\"{}\"/>",
                            attr(msg.as_deref().unwrap_or_default())
                        );
                        out.push_str("    </testcase>\n");
                    }
                    _ => out.push_str("/>\n"),
                }
            }
            out.push_str("  </testsuite>\n");
        }
        out.push_str("</testsuites>\n");
        out
    }
}

fn fmt_millis(ms: f64) -> String {
    if ms < 1000.0 {
        format!("{ms:.0}ms")
    } else {
        format!("{:.2}s", ms / 1000.0)
    }
}

/// Escapes text for an XML attribute value (keeps newlines and tabs).
pub fn attr(s: &str) -> String {
    escape(s, true)
}

/// Escapes XML character data.
pub fn text(s: &str) -> String {
    escape(s, false)
}

fn escape(s: &str, in_attr: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\n' if in_attr => out.push_str("&#10;"),
            '\r' if in_attr => out.push_str("&#13;"),
            '\t' if in_attr => out.push_str("&#9;"),
            '\n' | '\r' | '\t' => out.push(c),
            // Characters XML 1.0 cannot carry at all, even as references.
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn everything_is_escaped() {
        assert_eq!(attr("a<b>&\"c'\n\u{1}"), "a&lt;b&gt;&amp;&quot;c&apos;&#10;\u{FFFD}");
        assert_eq!(text("x\ny<"), "x\ny&lt;");
    }

    #[test]
    fn messages_are_one_line() {
        assert_eq!(one_line("a\n\nb \nc"), "a / b / c");
    }
}
