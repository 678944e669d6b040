//! Where sessions and budgets live: in memory (one breaker process) or in Redis, where every
//! budget update is one Lua script, so several gateways and breaker restarts share one state.
use std::{
    collections::{BTreeMap, HashMap},
    sync::Mutex,
};

use redis::{AsyncCommands, Script, aio::ConnectionManager};
use serde::{Deserialize, Serialize};

use crate::Error;

/// One recorded state change of a session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TransitionRec {
    pub from: String,
    pub to: String,
    pub by: String,
    pub at_ms: i64,
    pub reason: String,
}

/// A session's thresholds (`None`: no limit).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct LimitsRec {
    pub tokens: Option<u64>,
    pub cost_micros: Option<i64>,
    pub requests: Option<u64>,
    pub duration_s: Option<u64>,
}

/// Everything the breaker knows about one session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionRec {
    pub session_id: String,
    pub user: String,
    pub team: String,
    pub state: String,
    pub mode: String,
    pub tokens: u64,
    pub cost_micros: i64,
    pub requests: u64,
    pub started_ms: i64,
    pub last_ms: i64,
    pub tier: String,
    pub limits: LimitsRec,
    pub history: Vec<TransitionRec>,
}

impl SessionRec {
    pub fn key(&self) -> String {
        session_key(&self.user, &self.session_id)
    }
}

pub fn session_key(user: &str, session: &str) -> String {
    format!("{user}/{session}")
}

/// A budget as the store needs it: its id, where spend goes now, and its hard limits.
#[derive(Debug, Clone, PartialEq)]
pub struct SlotArgs {
    pub id: String,
    pub window: String,
    pub rolling_from: Option<i64>,
    pub hard_micros: Option<i64>,
    pub hard_tokens: Option<u64>,
}

/// What a lease call granted, and how much of the tightest hard limit is not yet spent
/// (`None`: that measure has no hard limit).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Granted {
    pub micros: i64,
    pub tokens: i64,
    pub unspent_micros: Option<i64>,
    pub unspent_tokens: Option<i64>,
}

/// Spent (in the current window) and outstanding (leased, not yet settled or returned) amounts.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct BudgetStatus {
    pub used_micros: i64,
    pub used_tokens: i64,
    pub out_micros: i64,
    pub out_tokens: i64,
}

#[derive(Default)]
struct MemBudget {
    out: (i64, i64),
    used: BTreeMap<String, (i64, i64)>,
}

impl MemBudget {
    fn used_in(&mut self, slot: &SlotArgs) -> (i64, i64) {
        match slot.rolling_from {
            None => self.used.get(&slot.window).copied().unwrap_or_default(),
            Some(from) => {
                self.used
                    .retain(|b, _| b.parse::<i64>().is_ok_and(|b| b >= from));
                self.used
                    .values()
                    .fold((0, 0), |a, v| (a.0 + v.0, a.1 + v.1))
            }
        }
    }
}

#[derive(Default)]
pub struct Mem {
    sessions: HashMap<String, (SessionRec, u64)>,
    budgets: HashMap<String, MemBudget>,
}

pub enum Store {
    Memory(Mutex<Mem>),
    Redis {
        conn: ConnectionManager,
        prefix: String,
    },
}

const LEASE_LUA: &str = r#"
local n = tonumber(ARGV[1])
local want_m, want_t = tonumber(ARGV[2]), tonumber(ARGV[3])
local ret_m, ret_t = tonumber(ARGV[4]), tonumber(ARGV[5])
local function used(k, win, from)
  if from == '' then
    return tonumber(redis.call('HGET', k, win .. ':m') or '0'), tonumber(redis.call('HGET', k, win .. ':t') or '0')
  end
  local f, m, t = tonumber(from), 0, 0
  local all = redis.call('HGETALL', k)
  for i = 1, #all, 2 do
    local field = all[i]
    local sep = string.find(field, ':', 1, true)
    local b = tonumber(string.sub(field, 1, sep - 1))
    if b < f then redis.call('HDEL', k, field)
    elseif string.sub(field, sep + 1) == 'm' then m = m + tonumber(all[i + 1])
    else t = t + tonumber(all[i + 1]) end
  end
  return m, t
end
local avail_m, avail_t, unspent_m, unspent_t = nil, nil, nil, nil
for i = 1, n do
  local ok, uk = KEYS[2 * i - 1], KEYS[2 * i]
  local base = 5 + (i - 1) * 4
  local om = tonumber(redis.call('HINCRBY', ok, 'm', 0 - ret_m))
  local ot = tonumber(redis.call('HINCRBY', ok, 't', 0 - ret_t))
  if om < 0 then redis.call('HSET', ok, 'm', 0); om = 0 end
  if ot < 0 then redis.call('HSET', ok, 't', 0); ot = 0 end
  local um, ut = used(uk, ARGV[base + 1], ARGV[base + 2])
  if ARGV[base + 3] ~= '' then
    local h = tonumber(ARGV[base + 3])
    if avail_m == nil or h - um - om < avail_m then avail_m = h - um - om end
    if unspent_m == nil or h - um < unspent_m then unspent_m = h - um end
  end
  if ARGV[base + 4] ~= '' then
    local h = tonumber(ARGV[base + 4])
    if avail_t == nil or h - ut - ot < avail_t then avail_t = h - ut - ot end
    if unspent_t == nil or h - ut < unspent_t then unspent_t = h - ut end
  end
end
local gm, gt = 0, 0
if avail_m ~= nil then gm = math.max(0, math.min(want_m, avail_m)) end
if avail_t ~= nil then gt = math.max(0, math.min(want_t, avail_t)) end
for i = 1, n do
  redis.call('HINCRBY', KEYS[2 * i - 1], 'm', gm)
  redis.call('HINCRBY', KEYS[2 * i - 1], 't', gt)
end
local function opt(v) if v == nil then return '' end return tostring(v) end
return {tostring(gm), tostring(gt), opt(unspent_m), opt(unspent_t)}
"#;

const SETTLE_LUA: &str = r#"
local n = tonumber(ARGV[1])
local m, t = tonumber(ARGV[2]), tonumber(ARGV[3])
for i = 1, n do
  local ok, uk, win = KEYS[2 * i - 1], KEYS[2 * i], ARGV[3 + i]
  if tonumber(redis.call('HINCRBY', ok, 'm', 0 - m)) < 0 then redis.call('HSET', ok, 'm', 0) end
  if tonumber(redis.call('HINCRBY', ok, 't', 0 - t)) < 0 then redis.call('HSET', ok, 't', 0) end
  redis.call('HINCRBY', uk, win .. ':m', m)
  redis.call('HINCRBY', uk, win .. ':t', t)
  redis.call('EXPIRE', uk, 3456000)
end
return 1
"#;

const CAS_LUA: &str = r#"
local v = redis.call('HGET', KEYS[1], 'v') or '0'
if v ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'v', tostring(tonumber(v) + 1), 'json', ARGV[2])
redis.call('SADD', KEYS[2], ARGV[3])
return 1
"#;

fn opt_i64(v: &str) -> Option<i64> {
    if v.is_empty() {
        None
    } else {
        v.parse::<f64>().ok().map(|f| f as i64)
    }
}

impl Store {
    pub fn memory() -> Store {
        Store::Memory(Mutex::new(Mem::default()))
    }

    /// Connects to Redis; every key starts with `prefix`.
    pub async fn redis(url: &str, prefix: &str) -> Result<Store, Error> {
        let client = redis::Client::open(url)
            .map_err(|e| Error::Store(format!("redis URL {url:?}: {e}")))?;
        let conn = ConnectionManager::new(client)
            .await
            .map_err(|e| Error::Store(format!("cannot reach redis: {e}")))?;
        Ok(Store::Redis {
            conn,
            prefix: prefix.to_owned(),
        })
    }

    fn mem(m: &Mutex<Mem>) -> std::sync::MutexGuard<'_, Mem> {
        m.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Checks that the store answers.
    pub async fn ping(&self) -> Result<(), Error> {
        match self {
            Store::Memory(_) => Ok(()),
            Store::Redis { conn, .. } => {
                let mut c = conn.clone();
                let _: String = redis::cmd("PING").query_async(&mut c).await?;
                Ok(())
            }
        }
    }

    pub async fn get_session(&self, key: &str) -> Result<Option<(SessionRec, u64)>, Error> {
        match self {
            Store::Memory(m) => Ok(Self::mem(m).sessions.get(key).cloned()),
            Store::Redis { conn, prefix } => {
                let mut c = conn.clone();
                let (v, json): (Option<u64>, Option<String>) = redis::cmd("HMGET")
                    .arg(format!("{prefix}s:{key}"))
                    .arg("v")
                    .arg("json")
                    .query_async(&mut c)
                    .await?;
                match (v, json) {
                    (Some(v), Some(j)) => Ok(Some((
                        serde_json::from_str(&j)
                            .map_err(|e| Error::Store(format!("session {key}: {e}")))?,
                        v,
                    ))),
                    _ => Ok(None),
                }
            }
        }
    }

    /// Writes `s` if the stored version is still `version` (0: absent); false if someone else won.
    pub async fn put_session(&self, version: u64, s: &SessionRec) -> Result<bool, Error> {
        let key = s.key();
        match self {
            Store::Memory(m) => {
                let mut m = Self::mem(m);
                let cur = m.sessions.get(&key).map_or(0, |(_, v)| *v);
                if cur != version {
                    return Ok(false);
                }
                m.sessions.insert(key, (s.clone(), version + 1));
                Ok(true)
            }
            Store::Redis { conn, prefix } => {
                let mut c = conn.clone();
                let json = serde_json::to_string(s).map_err(|e| Error::Store(e.to_string()))?;
                let ok: i64 = Script::new(CAS_LUA)
                    .key(format!("{prefix}s:{key}"))
                    .key(format!("{prefix}sessions"))
                    .arg(version.to_string())
                    .arg(json)
                    .arg(&key)
                    .invoke_async(&mut c)
                    .await?;
                Ok(ok == 1)
            }
        }
    }

    pub async fn list_sessions(&self) -> Result<Vec<SessionRec>, Error> {
        match self {
            Store::Memory(m) => Ok(Self::mem(m)
                .sessions
                .values()
                .map(|(s, _)| s.clone())
                .collect()),
            Store::Redis { conn, prefix } => {
                let mut c = conn.clone();
                let keys: Vec<String> = c.smembers(format!("{prefix}sessions")).await?;
                let mut out = Vec::with_capacity(keys.len());
                for k in keys {
                    if let Some((s, _)) = self.get_session(&k).await? {
                        out.push(s);
                    }
                }
                Ok(out)
            }
        }
    }

    fn budget_keys(prefix: &str, id: &str) -> (String, String) {
        (
            format!("{prefix}b:{id}:out"),
            format!("{prefix}b:{id}:used"),
        )
    }

    /// Atomically gives back `ret` and grants up to `want` from every budget in `slots` at once.
    pub async fn lease(
        &self,
        slots: &[SlotArgs],
        want: (i64, i64),
        ret: (i64, i64),
    ) -> Result<Granted, Error> {
        match self {
            Store::Memory(m) => {
                let mut m = Self::mem(m);
                let (mut avail_m, mut avail_t, mut un_m, mut un_t) =
                    (None::<i64>, None::<i64>, None::<i64>, None::<i64>);
                for s in slots {
                    let b = m.budgets.entry(s.id.clone()).or_default();
                    b.out.0 = (b.out.0 - ret.0).max(0);
                    b.out.1 = (b.out.1 - ret.1).max(0);
                    let used = b.used_in(s);
                    if let Some(h) = s.hard_micros {
                        avail_m = Some(
                            avail_m.map_or(h - used.0 - b.out.0, |a| a.min(h - used.0 - b.out.0)),
                        );
                        un_m = Some(un_m.map_or(h - used.0, |a| a.min(h - used.0)));
                    }
                    if let Some(h) = s.hard_tokens.map(|h| h as i64) {
                        avail_t = Some(
                            avail_t.map_or(h - used.1 - b.out.1, |a| a.min(h - used.1 - b.out.1)),
                        );
                        un_t = Some(un_t.map_or(h - used.1, |a| a.min(h - used.1)));
                    }
                }
                let gm = avail_m.map_or(0, |a| want.0.min(a).max(0));
                let gt = avail_t.map_or(0, |a| want.1.min(a).max(0));
                for s in slots {
                    let b = m.budgets.entry(s.id.clone()).or_default();
                    b.out.0 += gm;
                    b.out.1 += gt;
                }
                Ok(Granted {
                    micros: gm,
                    tokens: gt,
                    unspent_micros: un_m,
                    unspent_tokens: un_t,
                })
            }
            Store::Redis { conn, prefix } => {
                let mut c = conn.clone();
                let script = Script::new(LEASE_LUA);
                let mut inv = script.prepare_invoke();
                for s in slots {
                    let (o, u) = Self::budget_keys(prefix, &s.id);
                    inv.key(o).key(u);
                }
                inv.arg(slots.len())
                    .arg(want.0)
                    .arg(want.1)
                    .arg(ret.0)
                    .arg(ret.1);
                for s in slots {
                    inv.arg(&s.window)
                        .arg(s.rolling_from.map(|f| f.to_string()).unwrap_or_default())
                        .arg(s.hard_micros.map(|h| h.to_string()).unwrap_or_default())
                        .arg(s.hard_tokens.map(|h| h.to_string()).unwrap_or_default());
                }
                let r: Vec<String> = inv.invoke_async(&mut c).await?;
                let get = |i: usize| r.get(i).map(String::as_str).unwrap_or("");
                Ok(Granted {
                    micros: opt_i64(get(0)).unwrap_or(0),
                    tokens: opt_i64(get(1)).unwrap_or(0),
                    unspent_micros: opt_i64(get(2)),
                    unspent_tokens: opt_i64(get(3)),
                })
            }
        }
    }

    /// Real spend: moves `spent` from outstanding to used in every budget of `slots`.
    pub async fn settle(&self, slots: &[SlotArgs], spent: (i64, i64)) -> Result<(), Error> {
        if slots.is_empty() {
            return Ok(());
        }
        match self {
            Store::Memory(m) => {
                let mut m = Self::mem(m);
                for s in slots {
                    let b = m.budgets.entry(s.id.clone()).or_default();
                    b.out.0 = (b.out.0 - spent.0).max(0);
                    b.out.1 = (b.out.1 - spent.1).max(0);
                    let u = b.used.entry(s.window.clone()).or_default();
                    u.0 += spent.0;
                    u.1 += spent.1;
                }
                Ok(())
            }
            Store::Redis { conn, prefix } => {
                let mut c = conn.clone();
                let script = Script::new(SETTLE_LUA);
                let mut inv = script.prepare_invoke();
                for s in slots {
                    let (o, u) = Self::budget_keys(prefix, &s.id);
                    inv.key(o).key(u);
                }
                inv.arg(slots.len()).arg(spent.0).arg(spent.1);
                for s in slots {
                    inv.arg(&s.window);
                }
                let _: i64 = inv.invoke_async(&mut c).await?;
                Ok(())
            }
        }
    }

    pub async fn budget_status(&self, slot: &SlotArgs) -> Result<BudgetStatus, Error> {
        match self {
            Store::Memory(m) => {
                let mut m = Self::mem(m);
                let b = m.budgets.entry(slot.id.clone()).or_default();
                let used = b.used_in(slot);
                Ok(BudgetStatus {
                    used_micros: used.0,
                    used_tokens: used.1,
                    out_micros: b.out.0,
                    out_tokens: b.out.1,
                })
            }
            Store::Redis { conn, prefix } => {
                let mut c = conn.clone();
                let (o, u) = Self::budget_keys(prefix, &slot.id);
                let out: HashMap<String, i64> = c.hgetall(&o).await?;
                let used: HashMap<String, i64> = c.hgetall(&u).await?;
                let (mut um, mut ut) = (0, 0);
                for (field, v) in used {
                    let Some((w, kind)) = field.split_once(':') else {
                        continue;
                    };
                    let inside = match slot.rolling_from {
                        None => w == slot.window,
                        Some(from) => w.parse::<i64>().is_ok_and(|b| b >= from),
                    };
                    if inside {
                        if kind == "m" { um += v } else { ut += v }
                    }
                }
                Ok(BudgetStatus {
                    used_micros: um,
                    used_tokens: ut,
                    out_micros: out.get("m").copied().unwrap_or(0),
                    out_tokens: out.get("t").copied().unwrap_or(0),
                })
            }
        }
    }
}
