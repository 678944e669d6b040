//! Where sessions and budgets live: in memory (one breaker process) or in Redis, where every
//! budget update is one Lua script, so several gateways and breaker restarts share one state.
use std::{
    collections::{BTreeMap, HashMap},
    sync::{LazyLock, Mutex},
};

use redis::{AsyncCommands, Script, aio::ConnectionManager};
use serde::{Deserialize, Serialize};

use crate::{
    Error,
    policy::Mode,
    session::{SessionState, Tier},
};

/// One recorded state change of a session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TransitionRec {
    /// None for the session's first transition (stored as `""`).
    #[serde(with = "crate::session::state_or_blank")]
    pub from: Option<SessionState>,
    pub to: SessionState,
    pub by: String,
    pub at_ms: i64,
    pub reason: String,
}

/// A session's thresholds (`None`: no limit).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LimitsRec {
    pub tokens: Option<u64>,
    pub cost_micros: Option<i64>,
    pub requests: Option<u64>,
    pub duration_s: Option<u64>,
    /// The highest model tier used without asking (`small`, `mid`, `frontier`).
    #[serde(default)]
    pub tier: Option<Tier>,
}

/// Everything the breaker knows about one session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionRec {
    pub session_id: String,
    pub user: String,
    pub team: String,
    pub state: SessionState,
    /// The policy's mode when the session started or last crossed a threshold.
    pub mode: Mode,
    pub tokens: u64,
    pub cost_micros: i64,
    pub requests: u64,
    pub started_ms: i64,
    pub last_ms: i64,
    /// The highest model tier used so far; None (stored as `""`) before any ranked one.
    #[serde(with = "crate::session::tier_or_blank")]
    pub tier: Option<Tier>,
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

/// A session the gateways must refuse (paused or stopped), kept beside the sessions so that every
/// breaker replica sees a pause at once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BlockedRec {
    pub user: String,
    pub session_id: String,
    pub state: SessionState,
    pub message: String,
}

/// Where a lease call or settlement comes from, and when: leases are held per gateway and lapse
/// `ttl_ms` after the gateway last renewed them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Holder<'a> {
    pub gateway: &'a str,
    pub now_ms: i64,
    pub ttl_ms: i64,
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
    /// Outstanding per gateway: (micros, tokens, lapses at ms).
    out: HashMap<String, (i64, i64, i64)>,
    used: BTreeMap<String, (i64, i64)>,
}

impl MemBudget {
    /// Drops lapsed leases; (others' outstanding, this gateway's).
    fn outstanding(&mut self, h: &Holder<'_>) -> ((i64, i64), (i64, i64)) {
        self.out.retain(|_, v| v.2 >= h.now_ms);
        let mut others = (0, 0);
        let mut own = (0, 0);
        for (g, v) in &self.out {
            if g == h.gateway {
                own = (v.0, v.1);
            } else {
                others = (others.0 + v.0, others.1 + v.1);
            }
        }
        (others, own)
    }

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
    blocked: BTreeMap<String, BlockedRec>,
    budgets: HashMap<String, MemBudget>,
    /// Claims (settled batches, sent alerts): id → expires at (ms).
    batches: HashMap<String, i64>,
}

pub enum Store {
    Memory(Mutex<Mem>),
    Redis {
        conn: ConnectionManager,
        prefix: String,
    },
}

/// Outstanding amounts per gateway (`GW|m`, `GW|t`, `GW|x` = lapses at ms) in one hash per budget.
const OUTSTANDING_LUA: &str = r#"
local function outstanding(k, gw, now)
  local all = redis.call('HGETALL', k)
  local rows = {}
  for i = 1, #all, 2 do
    local f = all[i]
    local p = string.find(f, '|[^|]*$')
    if p then
      local g, kind = string.sub(f, 1, p - 1), string.sub(f, p + 1)
      rows[g] = rows[g] or {m = 0, t = 0, x = 0}
      rows[g][kind] = tonumber(all[i + 1]) or 0
    else
      redis.call('HDEL', k, f)
    end
  end
  local tm, tt, om, ot = 0, 0, 0, 0
  for g, r in pairs(rows) do
    if r.x < now then
      redis.call('HDEL', k, g .. '|m', g .. '|t', g .. '|x')
    elseif g == gw then
      om, ot = r.m, r.t
    else
      tm, tt = tm + r.m, tt + r.t
    end
  end
  return tm, tt, om, ot
end
"#;

const LEASE_LUA: &str = r#"
local n = tonumber(ARGV[1])
local want_m, want_t = tonumber(ARGV[2]), tonumber(ARGV[3])
local ret_m, ret_t = tonumber(ARGV[4]), tonumber(ARGV[5])
local gw, now, ttl = ARGV[6], tonumber(ARGV[7]), tonumber(ARGV[8])
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
local own_m, own_t = {}, {}
for i = 1, n do
  local ok, uk = KEYS[2 * i - 1], KEYS[2 * i]
  local base = 8 + (i - 1) * 4
  local tm, tt, om, ot = outstanding(ok, gw, now)
  om, ot = math.max(0, om - ret_m), math.max(0, ot - ret_t)
  own_m[i], own_t[i] = om, ot
  om, ot = om + tm, ot + tt
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
  local ok = KEYS[2 * i - 1]
  redis.call('HSET', ok, gw .. '|m', string.format('%d', own_m[i] + gm), gw .. '|t', string.format('%d', own_t[i] + gt), gw .. '|x', string.format('%d', now + ttl))
  redis.call('PEXPIRE', ok, 2 * ttl)
end
local function opt(v) if v == nil then return '' end return string.format('%d', v) end
return {string.format('%d', gm), string.format('%d', gt), opt(unspent_m), opt(unspent_t)}
"#;

const SETTLE_LUA: &str = r#"
local n = tonumber(ARGV[1])
local m, t = tonumber(ARGV[2]), tonumber(ARGV[3])
local gw, now, ttl = ARGV[4], tonumber(ARGV[5]), tonumber(ARGV[6])
for i = 1, n do
  local ok, uk, win = KEYS[2 * i - 1], KEYS[2 * i], ARGV[6 + i]
  local x = tonumber(redis.call('HGET', ok, gw .. '|x') or '0')
  if x >= now then
    local om = tonumber(redis.call('HGET', ok, gw .. '|m') or '0') - m
    local ot = tonumber(redis.call('HGET', ok, gw .. '|t') or '0') - t
    redis.call('HSET', ok, gw .. '|m', string.format('%d', math.max(0, om)), gw .. '|t', string.format('%d', math.max(0, ot)), gw .. '|x', string.format('%d', now + ttl))
    redis.call('PEXPIRE', ok, 2 * ttl)
  end
  redis.call('HINCRBY', uk, win .. ':m', m)
  redis.call('HINCRBY', uk, win .. ':t', t)
  redis.call('EXPIRE', uk, 3456000)
end
return 1
"#;

/// Writes a session if its version is unchanged, and keeps the blocked set beside it.
const CAS_LUA: &str = r#"
local v = redis.call('HGET', KEYS[1], 'v') or '0'
if v ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'v', tostring(tonumber(v) + 1), 'json', ARGV[2])
redis.call('SADD', KEYS[2], ARGV[3])
if ARGV[4] == '' then redis.call('HDEL', KEYS[3], ARGV[3]) else redis.call('HSET', KEYS[3], ARGV[3], ARGV[4]) end
return 1
"#;

static LEASE: LazyLock<Script> =
    LazyLock::new(|| Script::new(&format!("{OUTSTANDING_LUA}{LEASE_LUA}")));
static SETTLE: LazyLock<Script> = LazyLock::new(|| Script::new(SETTLE_LUA));
static CAS: LazyLock<Script> = LazyLock::new(|| Script::new(CAS_LUA));

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
        let client = redis::Client::open(url).map_err(|source| Error::RedisOpen {
            what: "the Redis URL is not valid",
            source,
        })?;
        let conn = ConnectionManager::new(client)
            .await
            .map_err(|source| Error::RedisOpen {
                what: "cannot reach Redis",
                source,
            })?;
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
                        serde_json::from_str(&j).map_err(|source| Error::Record {
                            what: format!("session {key} is unreadable"),
                            source,
                        })?,
                        v,
                    ))),
                    _ => Ok(None),
                }
            }
        }
    }

    /// Writes `s` if the stored version is still `version` (0: absent); false if someone else won.
    /// In the same step the session joins (`Some`) or leaves (`None`) the blocked set.
    pub async fn put_session(
        &self,
        version: u64,
        s: &SessionRec,
        blocked: Option<&BlockedRec>,
    ) -> Result<bool, Error> {
        let key = s.key();
        match self {
            Store::Memory(m) => {
                let mut m = Self::mem(m);
                let cur = m.sessions.get(&key).map_or(0, |(_, v)| *v);
                if cur != version {
                    return Ok(false);
                }
                match blocked {
                    Some(b) => m.blocked.insert(key.clone(), b.clone()),
                    None => m.blocked.remove(&key),
                };
                m.sessions.insert(key, (s.clone(), version + 1));
                Ok(true)
            }
            Store::Redis { conn, prefix } => {
                let mut c = conn.clone();
                let json = serde_json::to_string(s).map_err(|source| Error::Record {
                    what: format!("session {key} cannot be written"),
                    source,
                })?;
                let blocked = match blocked {
                    Some(b) => serde_json::to_string(b).map_err(|source| Error::Record {
                        what: format!("blocked session {key} cannot be written"),
                        source,
                    })?,
                    None => String::new(),
                };
                let ok: i64 = CAS
                    .key(format!("{prefix}s:{key}"))
                    .key(format!("{prefix}sessions"))
                    .key(format!("{prefix}blocked"))
                    .arg(version.to_string())
                    .arg(json)
                    .arg(&key)
                    .arg(blocked)
                    .invoke_async(&mut c)
                    .await?;
                Ok(ok == 1)
            }
        }
    }

    /// Every paused or stopped session, as the gateways must know them.
    pub async fn blocked(&self) -> Result<Vec<BlockedRec>, Error> {
        match self {
            Store::Memory(m) => Ok(Self::mem(m).blocked.values().cloned().collect()),
            Store::Redis { conn, prefix } => {
                let mut c = conn.clone();
                let all: BTreeMap<String, String> = c.hgetall(format!("{prefix}blocked")).await?;
                all.into_iter()
                    .map(|(k, j)| {
                        serde_json::from_str(&j).map_err(|source| Error::Record {
                            what: format!("blocked session {k} is unreadable"),
                            source,
                        })
                    })
                    .collect()
            }
        }
    }

    /// Claims `id` (a settlement batch, an alert) for `for_ms`; false if it was claimed before and
    /// has not expired: a retried batch is applied once, an alert sent once by all replicas.
    pub async fn claim(&self, id: &str, now_ms: i64, for_ms: i64) -> Result<bool, Error> {
        match self {
            Store::Memory(m) => {
                let mut m = Self::mem(m);
                if m.batches.len() > 100_000 {
                    m.batches.retain(|_, until| *until > now_ms);
                }
                if m.batches.get(id).is_some_and(|until| *until > now_ms) {
                    return Ok(false);
                }
                m.batches.insert(id.to_owned(), now_ms + for_ms);
                Ok(true)
            }
            Store::Redis { conn, prefix } => {
                let mut c = conn.clone();
                let set: Option<String> = redis::cmd("SET")
                    .arg(format!("{prefix}claim:{id}"))
                    .arg(1)
                    .arg("NX")
                    .arg("PX")
                    .arg(for_ms.max(1))
                    .query_async(&mut c)
                    .await?;
                Ok(set.is_some())
            }
        }
    }

    /// Forgets a claim whose work could not be done (a batch that failed half way), so that a
    /// retry does it.
    pub async fn release(&self, id: &str) -> Result<(), Error> {
        match self {
            Store::Memory(m) => {
                Self::mem(m).batches.remove(id);
                Ok(())
            }
            Store::Redis { conn, prefix } => {
                let mut c = conn.clone();
                let _: i64 = c.del(format!("{prefix}claim:{id}")).await?;
                Ok(())
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

    /// Atomically gives back `ret` and grants up to `want` from every budget in `slots` at once,
    /// to the holder's lease, which it renews; lapsed leases of any gateway are dropped first.
    pub async fn lease(
        &self,
        slots: &[SlotArgs],
        holder: &Holder<'_>,
        want: (i64, i64),
        ret: (i64, i64),
    ) -> Result<Granted, Error> {
        match self {
            Store::Memory(m) => {
                let mut m = Self::mem(m);
                let (mut avail_m, mut avail_t, mut un_m, mut un_t) =
                    (None::<i64>, None::<i64>, None::<i64>, None::<i64>);
                let mut own = Vec::with_capacity(slots.len());
                for s in slots {
                    let b = m.budgets.entry(s.id.clone()).or_default();
                    let (others, mine) = b.outstanding(holder);
                    let mine = ((mine.0 - ret.0).max(0), (mine.1 - ret.1).max(0));
                    own.push(mine);
                    let out = (others.0 + mine.0, others.1 + mine.1);
                    let used = b.used_in(s);
                    if let Some(h) = s.hard_micros {
                        avail_m =
                            Some(avail_m.map_or(h - used.0 - out.0, |a| a.min(h - used.0 - out.0)));
                        un_m = Some(un_m.map_or(h - used.0, |a| a.min(h - used.0)));
                    }
                    if let Some(h) = s.hard_tokens.map(|h| h as i64) {
                        avail_t =
                            Some(avail_t.map_or(h - used.1 - out.1, |a| a.min(h - used.1 - out.1)));
                        un_t = Some(un_t.map_or(h - used.1, |a| a.min(h - used.1)));
                    }
                }
                let gm = avail_m.map_or(0, |a| want.0.min(a).max(0));
                let gt = avail_t.map_or(0, |a| want.1.min(a).max(0));
                for (s, mine) in slots.iter().zip(own) {
                    let b = m.budgets.entry(s.id.clone()).or_default();
                    b.out.insert(
                        holder.gateway.to_owned(),
                        (mine.0 + gm, mine.1 + gt, holder.now_ms + holder.ttl_ms),
                    );
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
                let mut inv = LEASE.prepare_invoke();
                for s in slots {
                    let (o, u) = Self::budget_keys(prefix, &s.id);
                    inv.key(o).key(u);
                }
                inv.arg(slots.len())
                    .arg(want.0)
                    .arg(want.1)
                    .arg(ret.0)
                    .arg(ret.1)
                    .arg(holder.gateway)
                    .arg(holder.now_ms)
                    .arg(holder.ttl_ms);
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

    /// Real spend: moves `spent` from the holder's lease (renewing it) to used in every budget of
    /// `slots`.
    pub async fn settle(
        &self,
        slots: &[SlotArgs],
        holder: &Holder<'_>,
        spent: (i64, i64),
    ) -> Result<(), Error> {
        if slots.is_empty() {
            return Ok(());
        }
        match self {
            Store::Memory(m) => {
                let mut m = Self::mem(m);
                for s in slots {
                    let b = m.budgets.entry(s.id.clone()).or_default();
                    if let Some(o) = b.out.get_mut(holder.gateway)
                        && o.2 >= holder.now_ms
                    {
                        *o = (
                            (o.0 - spent.0).max(0),
                            (o.1 - spent.1).max(0),
                            holder.now_ms + holder.ttl_ms,
                        );
                    }
                    let u = b.used.entry(s.window.clone()).or_default();
                    u.0 += spent.0;
                    u.1 += spent.1;
                }
                Ok(())
            }
            Store::Redis { conn, prefix } => {
                let mut c = conn.clone();
                let mut inv = SETTLE.prepare_invoke();
                for s in slots {
                    let (o, u) = Self::budget_keys(prefix, &s.id);
                    inv.key(o).key(u);
                }
                inv.arg(slots.len())
                    .arg(spent.0)
                    .arg(spent.1)
                    .arg(holder.gateway)
                    .arg(holder.now_ms)
                    .arg(holder.ttl_ms);
                for s in slots {
                    inv.arg(&s.window);
                }
                let _: i64 = inv.invoke_async(&mut c).await?;
                Ok(())
            }
        }
    }

    /// Spent in the current window, and outstanding in leases that have not lapsed at `now_ms`.
    pub async fn budget_status(&self, slot: &SlotArgs, now_ms: i64) -> Result<BudgetStatus, Error> {
        match self {
            Store::Memory(m) => {
                let mut m = Self::mem(m);
                let b = m.budgets.entry(slot.id.clone()).or_default();
                let used = b.used_in(slot);
                let (out, _) = b.outstanding(&Holder {
                    gateway: "",
                    now_ms,
                    ttl_ms: 0,
                });
                let own = b.out.get("").map_or((0, 0), |o| (o.0, o.1));
                Ok(BudgetStatus {
                    used_micros: used.0,
                    used_tokens: used.1,
                    out_micros: out.0 + own.0,
                    out_tokens: out.1 + own.1,
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
                // Per gateway: `GW|m`, `GW|t`, `GW|x` (lapses at).
                let (mut om, mut ot) = (0, 0);
                for (field, v) in &out {
                    let Some((g, kind)) = field.rsplit_once('|') else {
                        continue;
                    };
                    let live = out.get(&format!("{g}|x")).is_some_and(|x| *x >= now_ms);
                    match kind {
                        "m" if live => om += v,
                        "t" if live => ot += v,
                        _ => {}
                    }
                }
                Ok(BudgetStatus {
                    used_micros: um,
                    used_tokens: ut,
                    out_micros: om,
                    out_tokens: ot,
                })
            }
        }
    }
}
