//! Bringing the table in line: the [`Backend`]s that run transactions
//! and list the table, and [`sync`], which programs only the difference
//! between two states (see the [module documentation](crate::nft)).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use berth_plugin_api::util::command::{Cmd, Runner};
use berth_plugin_api::{DriverError, DriverResult, ErrorKind};
use serde_json::{json, Value};

use super::{
    add_rules, batch, elements, plan, ruleset, skeleton, table_ref, FwNetwork, Group, Plan, BRIDGES, CHAINS,
    FAMILY,
};

/// What changes from one plan to the next: groups that go (or change),
/// groups that come (or change), set members that go and come.
#[derive(Debug, Default)]
struct Diff<'a> {
    gone: Vec<&'a Group>,
    new: Vec<&'a Group>,
    gone_bridges: Vec<String>,
    new_bridges: Vec<String>,
}

fn diff<'a>(cur: &'a Plan, next: &'a Plan) -> Diff<'a> {
    let find = |plan: &'a Plan, comment: &str| plan.groups.iter().find(|g| g.comment == comment);
    Diff {
        gone: cur.groups.iter().filter(|g| find(next, &g.comment) != Some(*g)).collect(),
        new: next.groups.iter().filter(|g| find(cur, &g.comment) != Some(*g)).collect(),
        gone_bridges: cur.bridges.iter().filter(|b| !next.bridges.contains(b)).cloned().collect(),
        new_bridges: next.bridges.iter().filter(|b| !cur.bridges.contains(b)).cloned().collect(),
    }
}

/// The transaction that adds `d`'s new set members and groups; with the
/// table skeleton first when the table does not exist yet. Deletes
/// nothing.
fn add_only(table: &str, first: bool, d: &Diff<'_>) -> Value {
    let mut cmds = if first { skeleton(table) } else { Vec::new() };
    cmds.extend(elements("add", table, &d.new_bridges));
    cmds.extend(add_rules(table, d.new.iter().copied()));
    batch(cmds)
}

/// A rule of the listed table.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Listed {
    chain: String,
    handle: u64,
}

/// The listed table's rules by comment, when it holds exactly the base
/// chains, the set with the members of `plan` and the rules of its groups
/// (by comment and chain; expressions are not compared); `None` when it
/// diverged from what the driver programmed.
fn expected_rules(listing: &Value, plan: &Plan) -> Option<BTreeMap<String, Vec<Listed>>> {
    let items = listing.get("nftables")?.as_array()?;
    let mut chains = BTreeSet::new();
    let mut members: Option<BTreeSet<String>> = None;
    let mut rules: BTreeMap<String, Vec<Listed>> = BTreeMap::new();
    for item in items {
        if let Some(c) = item.get("chain") {
            chains.insert(c.get("name")?.as_str()?.to_string());
        } else if let Some(s) = item.get("set") {
            if s.get("name")?.as_str()? != BRIDGES {
                return None;
            }
            let elem = s.get("elem").and_then(Value::as_array).cloned().unwrap_or_default();
            let names = elem.iter().map(|e| {
                e.as_str().or_else(|| e.pointer("/elem/val").and_then(Value::as_str)).map(str::to_string)
            });
            members = Some(names.collect::<Option<_>>()?);
        } else if let Some(r) = item.get("rule") {
            let comment = r.get("comment")?.as_str()?.to_string();
            let rule =
                Listed { chain: r.get("chain")?.as_str()?.to_string(), handle: r.get("handle")?.as_u64()? };
            rules.entry(comment).or_default().push(rule);
        } else if item.get("metainfo").is_none() && item.get("table").is_none() {
            return None;
        }
    }
    let want_chains: BTreeSet<String> = CHAINS.iter().map(|c| c.0.to_string()).collect();
    let want_members: BTreeSet<String> = plan.bridges.iter().cloned().collect();
    if chains != want_chains || members != Some(want_members) || rules.len() != plan.groups.len() {
        return None;
    }
    for g in &plan.groups {
        let mut have: Vec<&str> = rules.get(&g.comment)?.iter().map(|r| r.chain.as_str()).collect();
        let mut want: Vec<&str> = g.rules.iter().map(|r| r.0).collect();
        have.sort_unstable();
        want.sort_unstable();
        if have != want {
            return None;
        }
    }
    Some(rules)
}

/// Where transactions go and listings come from: libnftables in process
/// ([`crate::libnft::Library`]) or the `nft` command ([`Command`]).
pub trait Backend: Send + Sync + fmt::Debug {
    /// Runs a transaction (`{"nftables": [...]}`) atomically.
    fn apply(&self, batch: &Value) -> DriverResult<()>;
    /// `nft -j -a list table inet <table>`; `None` when there is no such
    /// table.
    fn list(&self, table: &str) -> DriverResult<Option<Value>>;
}

/// Maps what nftables said about `what` to a typed error.
pub(crate) fn nft_error(what: &str, said: &str) -> DriverError {
    let msg = format!("{what} failed: {}", said.trim());
    if said.contains("Operation not permitted") {
        DriverError::permission_denied(msg)
    } else {
        DriverError::internal(msg)
    }
}

/// Whether nftables' error text says the listed table does not exist.
pub(crate) fn no_such_table(said: &str) -> bool {
    said.contains("No such file or directory")
}

/// The `nft` command: a transaction is written to a file and run with `nft
/// -j -f <file>`; a process per call.
#[derive(Debug)]
pub struct Command {
    runner: Arc<dyn Runner>,
    file: PathBuf,
}

impl Command {
    /// Runs `nft` through `runner`, writing transactions to `file`.
    pub fn new(runner: Arc<dyn Runner>, file: PathBuf) -> Command {
        Command { runner, file }
    }

    fn run(&self, cmd: &Cmd) -> DriverResult<berth_plugin_api::util::command::Output> {
        self.runner.run(cmd).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => DriverError::unavailable(format!(
                "`{cmd}`: {e}; install nftables (the bridge driver programs NAT and isolation with nft)"
            )),
            _ => DriverError::io(format_args!("`{cmd}`"), &e),
        })
    }
}

impl Backend for Command {
    fn apply(&self, batch: &Value) -> DriverResult<()> {
        let file = &self.file;
        let text = serde_json::to_vec(batch)
            .map_err(|e| DriverError::internal(format!("encode nftables batch: {e}")))?;
        std::fs::write(file, text)
            .map_err(|e| DriverError::io(format_args!("write nftables batch {}", file.display()), &e))?;
        let cmd = Cmd::new(["nft".to_string(), "-j".into(), "-f".into(), file.display().to_string()]);
        let out = self.run(&cmd)?;
        let _ = std::fs::remove_file(file);
        if out.success() {
            Ok(())
        } else {
            Err(nft_error(&format!("`{cmd}`"), &out.stderr))
        }
    }

    fn list(&self, table: &str) -> DriverResult<Option<Value>> {
        let cmd = Cmd::new(["nft", "-j", "-a", "list", "table", FAMILY, table].map(String::from));
        let out = self.run(&cmd)?;
        if !out.success() {
            return if no_such_table(&out.stderr) {
                Ok(None)
            } else {
                Err(nft_error(&format!("`{cmd}`"), &out.stderr))
            };
        }
        serde_json::from_str(&out.stdout)
            .map(Some)
            .map_err(|e| DriverError::internal(format!("`{cmd}` printed no JSON listing: {e}")))
    }
}

/// How [`sync`] brought the table in line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// It was already right: nothing ran.
    Unchanged,
    /// One transaction that only added (set members, rules; with the first
    /// network the table, its chains and the set).
    Added,
    /// A listing, then one transaction that deleted the groups that went
    /// by handle (or the table, with the last network) and added the new.
    Changed,
    /// The whole table, regenerated ([`ruleset`]).
    Regenerated,
}

/// Makes `table` hold the rules for `next`. `current` is what the table
/// is known to hold (`None`: unknown, at start or after a failure), and
/// only the difference is programmed: added only when nothing goes (see
/// the [module documentation](crate::nft)). When the table is missing or not
/// what `current` says, or the change fails, the whole table is
/// regenerated instead; a lack of permission is reported at once.
pub fn sync(
    backend: &dyn Backend,
    table: &str,
    current: Option<&[FwNetwork]>,
    next: &[FwNetwork],
) -> DriverResult<Outcome> {
    let regenerate = || backend.apply(&ruleset(table, next)).map(|()| Outcome::Regenerated);
    let Some(current) = current else { return regenerate() };
    if current == next {
        return Ok(Outcome::Unchanged);
    }
    let (cur_plan, next_plan) = (plan(current), plan(next));
    let d = diff(&cur_plan, &next_plan);
    let result = if d.gone.is_empty() && d.gone_bridges.is_empty() {
        if d.new.is_empty() && d.new_bridges.is_empty() {
            return Ok(Outcome::Unchanged);
        }
        backend.apply(&add_only(table, current.is_empty(), &d)).map(|()| Outcome::Added)
    } else {
        change(backend, table, &cur_plan, next.is_empty(), &d)
    };
    match result {
        Err(e) if e.kind == ErrorKind::PermissionDenied => Err(e),
        Ok(Outcome::Regenerated) | Err(_) => regenerate(),
        Ok(o) => Ok(o),
    }
}

/// A change that deletes: `Ok(Regenerated)` asks the caller to regenerate
/// (the table is missing or diverged).
fn change(backend: &dyn Backend, table: &str, cur: &Plan, last: bool, d: &Diff<'_>) -> DriverResult<Outcome> {
    if last {
        // Nothing stays: the table goes whole, rules, chains and set.
        backend.apply(&batch(vec![json!({ "delete": { "table": table_ref(table) } })]))?;
        return Ok(Outcome::Changed);
    }
    let Some(listing) = backend.list(table)? else { return Ok(Outcome::Regenerated) };
    let Some(mut listed) = expected_rules(&listing, cur) else { return Ok(Outcome::Regenerated) };
    let mut cmds = Vec::new();
    for g in &d.gone {
        for r in listed.remove(&g.comment).unwrap_or_default() {
            cmds.push(json!({ "delete": { "rule": {
                "family": FAMILY, "table": table, "chain": r.chain, "handle": r.handle
            } } }));
        }
    }
    cmds.extend(elements("delete", table, &d.gone_bridges));
    cmds.extend(elements("add", table, &d.new_bridges));
    cmds.extend(add_rules(table, d.new.iter().copied()));
    backend.apply(&batch(cmds))?;
    Ok(Outcome::Changed)
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::nft::tests::net;
    use crate::nft::FwPort;
    use berth_plugin_api::util::command::script::Script;

    /// A backend that records transactions and answers listings from a
    /// script.
    #[derive(Debug, Default)]
    struct Recorder {
        applied: Mutex<Vec<Value>>,
        listings: Mutex<Vec<Option<Value>>>,
        fail: Mutex<Vec<DriverError>>,
    }

    impl Backend for Recorder {
        fn apply(&self, batch: &Value) -> DriverResult<()> {
            self.applied.lock().unwrap().push(batch.clone());
            match self.fail.lock().unwrap().pop() {
                Some(e) => Err(e),
                None => Ok(()),
            }
        }
        fn list(&self, _table: &str) -> DriverResult<Option<Value>> {
            Ok(self.listings.lock().unwrap().remove(0))
        }
    }

    impl Recorder {
        fn take(&self) -> Vec<Value> {
            std::mem::take(&mut *self.applied.lock().unwrap())
        }
    }

    /// The operations (`add rule`, `delete element`, ...) of a batch.
    fn ops(batch: &Value) -> Vec<String> {
        batch["nftables"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                let (op, obj) = c.as_object().unwrap().iter().next().unwrap();
                format!("{op} {}", obj.as_object().unwrap().keys().next().unwrap())
            })
            .collect()
    }

    /// What `nft -j -a list table` prints for `plan`, handles from 10.
    fn listing(table: &str, plan: &Plan) -> Value {
        let mut items =
            vec![json!({"metainfo": {"json_schema_version": 1}}), json!({"table": {"name": table}})];
        for (name, ..) in CHAINS {
            items.push(json!({"chain": {"family": "inet", "table": table, "name": name}}));
        }
        items.push(json!({"set": {"name": BRIDGES, "elem": plan.bridges}}));
        let mut handle = 10;
        for g in &plan.groups {
            for (chain, _) in &g.rules {
                items.push(json!({"rule": {"chain": chain, "handle": handle, "comment": g.comment}}));
                handle += 1;
            }
        }
        json!({ "nftables": items })
    }

    #[test]
    fn the_first_network_adds_the_table_and_later_ones_only_their_rules() {
        let r = Recorder::default();
        let all = [net("a", "br-a", "10.1.0.0/24"), net("b", "br-b", "10.2.0.0/24")];
        assert_eq!(sync(&r, "t", Some(&[]), &all[..1]).unwrap(), Outcome::Added);
        assert_eq!(sync(&r, "t", Some(&all[..1]), &all).unwrap(), Outcome::Added);
        let [first, second] = <[Value; 2]>::try_from(r.take()).unwrap();
        let want: Vec<&str> = ["add table"]
            .into_iter()
            .chain(["add chain"; 4])
            .chain(["add set", "add element"])
            .chain(["add rule"; 4])
            .collect();
        assert_eq!(ops(&first), want);
        assert_eq!(ops(&second), ["add element", "add rule", "add rule", "add rule", "add rule"]);
        assert_eq!(second["nftables"][0]["add"]["element"]["elem"], json!(["br-b"]));
        assert!(
            second.to_string().contains("berth network b") && !second.to_string().contains("berth network a")
        );
        assert_eq!(sync(&r, "t", Some(&all), &all).unwrap(), Outcome::Unchanged);
        assert!(r.take().is_empty());
    }

    #[test]
    fn publishing_adds_only_the_endpoints_rules_and_revoking_deletes_them_by_handle() {
        let r = Recorder::default();
        let bare = vec![net("a", "br-a", "10.1.0.0/24")];
        let mut published = bare.clone();
        published[0].ports = vec![FwPort {
            endpoint: "e1".into(),
            proto: "tcp",
            host_ip: None,
            host_port: 8080,
            container_ip: "10.1.0.2".parse().unwrap(),
            container_port: 80,
        }];
        assert_eq!(sync(&r, "t", Some(&bare), &published).unwrap(), Outcome::Added);
        let add = r.take().remove(0);
        assert_eq!(ops(&add), ["add rule", "add rule", "add rule"]);
        let comments: BTreeSet<&str> = add["nftables"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["add"]["rule"]["comment"].as_str().unwrap())
            .collect();
        assert_eq!(comments, ["berth network a endpoint e1", "berth network a published"].into());
        // revoke: the listing is checked, then exactly those handles go
        r.listings.lock().unwrap().push(Some(listing("t", &plan(&published))));
        assert_eq!(sync(&r, "t", Some(&published), &bare).unwrap(), Outcome::Changed);
        let del = r.take().remove(0);
        assert_eq!(ops(&del), ["delete rule", "delete rule", "delete rule"]);
        // handles 10-13 are the network's own four rules
        let handles: Vec<_> = del["nftables"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["delete"]["rule"]["handle"].clone())
            .collect();
        assert_eq!(handles, [json!(14), json!(15), json!(16)]);
    }

    #[test]
    fn deleting_a_network_deletes_its_rules_and_member_and_the_last_the_table() {
        let r = Recorder::default();
        let all = vec![net("a", "br-a", "10.1.0.0/24"), net("b", "br-b", "10.2.0.0/24")];
        r.listings.lock().unwrap().push(Some(listing("t", &plan(&all))));
        assert_eq!(sync(&r, "t", Some(&all), &all[1..]).unwrap(), Outcome::Changed);
        assert_eq!(sync(&r, "t", Some(&all[1..]), &[]).unwrap(), Outcome::Changed);
        let [del, last] = <[Value; 2]>::try_from(r.take()).unwrap();
        assert_eq!(ops(&del), ["delete rule", "delete rule", "delete rule", "delete rule", "delete element"]);
        assert_eq!(del["nftables"][4]["delete"]["element"]["elem"], json!(["br-a"]));
        assert_eq!(ops(&last), ["delete table"]);
    }

    #[test]
    fn a_missing_or_diverged_table_is_regenerated() {
        let r = Recorder::default();
        let all = vec![net("a", "br-a", "10.1.0.0/24"), net("b", "br-b", "10.2.0.0/24")];
        let mut foreign = listing("t", &plan(&all));
        foreign["nftables"].as_array_mut().unwrap().push(json!({"rule": {"chain": "forward", "handle": 99}}));
        let mut short = listing("t", &plan(&all));
        short["nftables"].as_array_mut().unwrap().pop();
        for l in [None, Some(foreign), Some(short)] {
            r.listings.lock().unwrap().push(l);
            assert_eq!(sync(&r, "t", Some(&all), &all[1..]).unwrap(), Outcome::Regenerated);
            let b = r.take();
            assert_eq!(b, [ruleset("t", &all[1..])]);
        }
        // unknown state: regenerated; a failed add: regenerated
        assert_eq!(sync(&r, "t", None, &all).unwrap(), Outcome::Regenerated);
        r.fail.lock().unwrap().push(DriverError::internal("no such table"));
        assert_eq!(sync(&r, "t", Some(&all[..1]), &all).unwrap(), Outcome::Regenerated);
        assert_eq!(r.take().len(), 3);
        // but a lack of permission is reported as it is
        r.fail.lock().unwrap().push(DriverError::permission_denied("Operation not permitted"));
        let e = sync(&r, "t", Some(&all[..1]), &all).unwrap_err();
        assert_eq!(e.kind, ErrorKind::PermissionDenied);
    }

    #[test]
    fn apply_runs_nft_and_reports_its_error() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("batch.json");
        let f = file.to_str().unwrap();
        let script = Script::new();
        script.ok(&["nft", "-j", "-f", f], "");
        script.fail(&["nft", "-j", "-f", f], 1, "Error: Could not process rule: Operation not permitted\n");
        let nft = Command::new(script.clone(), file.clone());
        nft.apply(&ruleset("t", &[])).unwrap();
        let e = nft.apply(&ruleset("t", &[])).unwrap_err();
        assert_eq!(e.kind, ErrorKind::PermissionDenied);
        assert!(e.message.contains("nft -j -f"), "{}", e.message);
        script.assert_done();
    }

    #[test]
    fn list_runs_nft_and_knows_a_missing_table() {
        let script = Script::new();
        let argv = ["nft", "-j", "-a", "list", "table", "inet", "t"];
        script.ok(&argv, r#"{"nftables": [{"table": {"name": "t"}}]}"#);
        script.fail(&argv, 1, "Error: No such file or directory\nlist table inet t\n");
        script.fail(&argv, 1, "Error: Operation not permitted\n");
        let nft = Command::new(script.clone(), PathBuf::from("/nonexistent"));
        assert_eq!(nft.list("t").unwrap().unwrap()["nftables"][0]["table"]["name"], "t");
        assert_eq!(nft.list("t").unwrap(), None);
        assert_eq!(nft.list("t").unwrap_err().kind, ErrorKind::PermissionDenied);
        script.assert_done();
    }

    #[test]
    fn sync_through_nft_lists_then_deletes() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("batch.json");
        let f = file.to_str().unwrap();
        let all = vec![net("a", "br-a", "10.1.0.0/24"), net("b", "br-b", "10.2.0.0/24")];
        let script = Script::new();
        script.ok(&["nft", "-j", "-f", f], "");
        script.ok(&["nft", "-j", "-a", "list", "table", "inet", "t"], &listing("t", &plan(&all)).to_string());
        script.ok(&["nft", "-j", "-f", f], "");
        let nft = Command::new(script.clone(), file.clone());
        assert_eq!(sync(&nft, "t", Some(&all[..1]), &all).unwrap(), Outcome::Added);
        assert_eq!(sync(&nft, "t", Some(&all), &all[..1]).unwrap(), Outcome::Changed);
        script.assert_done();
    }
}
