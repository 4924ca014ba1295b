//! `Engine` and `Decision` classes.

use pyo3::intern;
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedStr;
use pyo3::sync::GILOnceCell;
use pyo3::types::{
    PyDateAccess, PyDateTime, PyDict, PyString, PyTimeAccess, PyTzInfo, PyTzInfoAccess,
};

use super::errors::{py_result, to_py};
use crate::domain::{
    AccountIn, AllocationMethod, BlockOrder, BookIn, KillSwitch, LotFailurePolicy, Side,
};
use crate::engine::Engine as CoreEngine;
use crate::errors::CoreError;
use crate::fills::CloseReason;

fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// The fields of `mats.models.BlockOrder`, in the order a model instance's `__dict__` lists
/// them.
const ORDER_FIELDS: [&str; 16] = [
    "order_id",
    "journey_id",
    "strategy",
    "symbol",
    "side",
    "quantity",
    "target_weight_pct",
    "limit_price",
    "reference_price",
    "reference_time",
    "method",
    "ratios",
    "percents",
    "shares",
    "accounts",
    "on_lot_failure",
];

/// The position of `name` in `ORDER_FIELDS` (at compile time).
const fn field_index(name: &str) -> usize {
    let mut i = 0;
    while i < ORDER_FIELDS.len() {
        let (a, b) = (ORDER_FIELDS[i].as_bytes(), name.as_bytes());
        if a.len() == b.len() {
            let mut k = 0;
            while k < a.len() && a[k] == b[k] {
                k += 1;
            }
            if k == a.len() {
                return i;
            }
        }
        i += 1;
    }
    panic!("not a field of BlockOrder")
}

/// `ORDER_FIELDS` as interned strings (the keys of a model's `__dict__` are interned, so a key
/// is one of these exactly when it is the same object).
static ORDER_KEYS: GILOnceCell<[Py<PyString>; 16]> = GILOnceCell::new();

/// The fields of an order object: looked up in its instance `__dict__` when it has one (a
/// pydantic model keeps its fields there; a dict lookup is cheaper than attribute access),
/// else read as attributes. When the dict lists the fields first and in their order (a model
/// instance does), they are read in one pass over it instead of one lookup each.
struct Fields<'a, 'py> {
    obj: &'a Bound<'py, PyAny>,
    dict: Option<Bound<'py, PyDict>>,
    listed: Option<[Bound<'py, PyAny>; 16]>,
}

impl<'a, 'py> Fields<'a, 'py> {
    fn of(obj: &'a Bound<'py, PyAny>) -> Self {
        let py = obj.py();
        let dict = obj
            .getattr(intern!(py, "__dict__"))
            .ok()
            .and_then(|d| d.downcast_into::<PyDict>().ok());
        let listed = dict.as_ref().and_then(|d| in_order(d));
        Fields { obj, dict, listed }
    }

    fn get(&self, name: &Bound<'py, PyString>) -> PyResult<Bound<'py, PyAny>> {
        if let Some(v) = self.dict.as_ref().map(|d| d.get_item(name)).transpose()?.flatten() {
            return Ok(v);
        }
        self.obj.getattr(name)
    }

    /// Field `name`, number `i` of `ORDER_FIELDS`.
    fn get_at(&self, i: usize, name: &Bound<'py, PyString>) -> PyResult<Bound<'py, PyAny>> {
        match &self.listed {
            Some(values) => Ok(values[i].clone()),
            None => self.get(name),
        }
    }
}

/// The values of `dict` for `ORDER_FIELDS` when its first keys are those, in that order.
fn in_order<'py>(dict: &Bound<'py, PyDict>) -> Option<[Bound<'py, PyAny>; 16]> {
    let py = dict.py();
    let keys =
        ORDER_KEYS.get_or_init(py, || ORDER_FIELDS.map(|f| PyString::intern(py, f).unbind()));
    let mut pos: pyo3::ffi::Py_ssize_t = 0;
    let mut out: [Option<Bound<'py, PyAny>>; 16] = Default::default();
    for (i, key) in keys.iter().enumerate() {
        let mut k = std::ptr::null_mut();
        let mut v = std::ptr::null_mut();
        // SAFETY: the GIL is held and `dict` is a dict; `k` and `v` are borrowed references,
        // `v` is turned into an owned one before anything else runs
        let found = unsafe { pyo3::ffi::PyDict_Next(dict.as_ptr(), &mut pos, &mut k, &mut v) };
        if found == 0 || k != key.as_ptr() {
            return None;
        }
        out[i] = Some(unsafe { Bound::from_borrowed_ptr(py, v) });
    }
    Some(out.map(|v| v.expect("every field was read")))
}

/// Reads field `$name` of `$fields` as the type asked for; a wrong type is an `OrderError`
/// naming the field. Names are interned once, so reading an order allocates no name strings.
macro_rules! field {
    ($fields:expr, $name:literal) => {{
        let f = &$fields;
        let py = f.obj.py();
        const I: usize = field_index($name);
        f.get_at(I, intern!(py, $name))?
            .extract()
            .map_err(|e| to_py(py, CoreError::order(format!("{}: {e}", $name)).at([$name])))
    }};
}

/// A text field written over `out` (a string kept from the order before): see `str_field`.
macro_rules! str_field {
    ($fields:expr, $name:literal, $out:expr) => {{
        let f = &$fields;
        let py = f.obj.py();
        str_field(f, const { (field_index($name), $name) }, intern!(py, $name), $out)?
    }};
}

/// A share quantity given from Python: a whole number the core can hold, else `OrderError`.
fn quantity_arg(obj: &Bound<'_, PyAny>) -> PyResult<i64> {
    obj.extract::<i64>().map_err(|_| {
        to_py(
            obj.py(),
            CoreError::order(format!("quantity must be a whole number of shares, got {obj}"))
                .at(["quantity"]),
        )
    })
}

/// `dt.timestamp()`: seconds since the epoch. A `datetime.datetime` in UTC is read from its
/// fields, with the arithmetic of `datetime.timestamp` (whole microseconds since the epoch,
/// divided by 10^6, exact below 2^53 µs); any other object is asked.
fn timestamp(dt: &Bound<'_, PyAny>) -> PyResult<f64> {
    let py = dt.py();
    if let Ok(d) = dt.downcast_exact::<PyDateTime>() {
        let utc = PyTzInfo::utc(py)?;
        if d.get_tzinfo().is_some_and(|tz| tz.is(&*utc)) {
            let days = days_since_epoch(d.get_year(), d.get_month(), d.get_day());
            let secs = days * 86_400
                + i64::from(d.get_hour()) * 3_600
                + i64::from(d.get_minute()) * 60
                + i64::from(d.get_second());
            let us = secs * 1_000_000 + i64::from(d.get_microsecond());
            if us.unsigned_abs() < 1 << f64::MANTISSA_DIGITS {
                return Ok(us as f64 / 1e6);
            }
        }
    }
    dt.call_method0(intern!(py, "timestamp"))?.extract()
}

/// Days from 1970-01-01 to a date of the proleptic Gregorian calendar (as `date.toordinal`).
fn days_since_epoch(year: i32, month: u8, day: u8) -> i64 {
    const BEFORE_MONTH: [i64; 12] = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334];
    let y = i64::from(year) - 1;
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    let before_year = y * 365 + y / 4 - y / 100 + y / 400;
    let before_month = BEFORE_MONTH[usize::from(month) - 1] + i64::from(leap && month > 2);
    let ordinal = before_year + before_month + i64::from(day);
    // date(1970, 1, 1).toordinal()
    ordinal - 719_163
}

/// The strings of the latest order read, kept so that the next order is written over them
/// rather than into new allocations.
#[derive(Default)]
struct OrderStrings {
    ids: [String; 4],
    /// Names and values of the ratios, percents or shares.
    params: Vec<(String, f64)>,
    /// Names no longer in use, ready to be written over.
    spare: Vec<String>,
}

impl OrderStrings {
    /// Takes back the strings of an order that was read with `read_order`.
    fn recycle(&mut self, o: BlockOrder) {
        let BlockOrder { order_id, journey_id, strategy, symbol, params, .. } = o;
        self.ids = [order_id, journey_id, strategy, symbol];
        if let Some(p) = params {
            self.params = p;
        }
    }
}

/// Reads text field `name`, number `i` of `ORDER_FIELDS` (`key`, interned), of `f` into `out`
/// (a wrong type is an `OrderError` naming the field).
fn str_field<'py>(
    f: &Fields<'_, 'py>,
    (i, name): (usize, &'static str),
    key: &Bound<'py, PyString>,
    out: &mut String,
) -> PyResult<()> {
    let py = f.obj.py();
    let v = f.get_at(i, key)?;
    let text = v
        .downcast::<PyString>()
        .map_err(|e| {
            let e = PyErr::from(e);
            to_py(py, CoreError::order(format!("{name}: {e}")).at([name]))
        })?
        .to_str()?;
    out.clear();
    out.push_str(text);
    Ok(())
}

/// Reads a block order from any object with the attributes of `mats.models.BlockOrder`, into
/// the strings of `buf` (take them back with `OrderStrings::recycle`).
fn read_order(obj: &Bound<'_, PyAny>, buf: &mut OrderStrings) -> PyResult<BlockOrder> {
    let py = obj.py();
    let f = Fields::of(obj);
    // enum values are read in place (str subclasses), not copied
    let side: PyBackedStr = field!(f, "side")?;
    let method: PyBackedStr = field!(f, "method")?;
    let method = py_result(py, AllocationMethod::parse(&method))?;
    let policy: PyBackedStr = field!(f, "on_lot_failure")?;
    let reference_ts = timestamp(
        &f.get_at(const { field_index("reference_time") }, intern!(py, "reference_time"))?,
    )?;
    let param_field = match method {
        AllocationMethod::Ratios => {
            Some(("ratios", const { field_index("ratios") }, intern!(py, "ratios")))
        }
        AllocationMethod::Percent => {
            Some(("percents", const { field_index("percents") }, intern!(py, "percents")))
        }
        AllocationMethod::Shares => {
            Some(("shares", const { field_index("shares") }, intern!(py, "shares")))
        }
        _ => None,
    };
    let params = match param_field {
        Some((name, i, key)) => {
            let v = f.get_at(i, key)?;
            if v.is_none() {
                None
            } else {
                let d = v.downcast::<PyDict>().map_err(|_| {
                    to_py(py, CoreError::order(format!("{name} must be a mapping")).at([name]))
                })?;
                let mut out = std::mem::take(&mut buf.params);
                let mut n = 0;
                for (k, val) in d.iter() {
                    let k = k.downcast::<PyString>().map_err(PyErr::from)?.to_str()?;
                    let val = val.extract::<f64>()?;
                    if n < out.len() {
                        out[n].0.clear();
                        out[n].0.push_str(k);
                        out[n].1 = val;
                    } else {
                        let mut name = buf.spare.pop().unwrap_or_default();
                        name.clear();
                        name.push_str(k);
                        out.push((name, val));
                    }
                    n += 1;
                }
                buf.spare.extend(out.drain(n..).map(|e| e.0));
                Some(out)
            }
        }
        None => None,
    };
    let [mut order_id, mut journey_id, mut strategy, mut symbol] = std::mem::take(&mut buf.ids);
    str_field!(f, "order_id", &mut order_id);
    str_field!(f, "journey_id", &mut journey_id);
    str_field!(f, "strategy", &mut strategy);
    str_field!(f, "symbol", &mut symbol);
    Ok(BlockOrder {
        order_id,
        journey_id,
        strategy,
        symbol,
        side: py_result(py, Side::parse(&side))?,
        quantity: field!(f, "quantity")?,
        target_weight_pct: field!(f, "target_weight_pct")?,
        limit_price: field!(f, "limit_price")?,
        reference_price: field!(f, "reference_price")?,
        reference_ts,
        method,
        params,
        accounts: field!(f, "accounts")?,
        on_lot_failure: py_result(py, LotFailurePolicy::parse(&policy))?,
    })
}

/// (account_id, quantity, filled, avg_price, cash_delta)
type FillRow = (String, i64, i64, f64, f64);
/// (account_id, allocated, filled, shortfall, carried)
type ShortfallRow = (String, i64, i64, i64, bool);

/// The allocation and risk engine. Holds the book between calls.
#[pyclass(module = "mats._core")]
pub struct Engine {
    inner: CoreEngine,
    strings: OrderStrings,
}

#[pymethods]
impl Engine {
    #[new]
    fn new(py: Python<'_>, book_json: &str) -> PyResult<Self> {
        let book = py_result(py, BookIn::from_json(book_json))?;
        Ok(Engine {
            inner: py_result(py, CoreEngine::new(book))?,
            strings: OrderStrings::default(),
        })
    }

    /// Layer 1, allocation and layer 2 for one block order.
    #[pyo3(signature = (order, as_of=None, commit=true))]
    fn process(
        &mut self,
        order: &Bound<'_, PyAny>,
        as_of: Option<f64>,
        commit: bool,
    ) -> PyResult<Decision> {
        let py = order.py();
        let o = read_order(order, &mut self.strings)?;
        let d = self.inner.process(&o, as_of.unwrap_or_else(now), commit);
        self.strings.recycle(o);
        Ok(Decision { inner: py_result(py, d)? })
    }

    /// Adds or replaces an account (JSON of `mats.models.Account`).
    fn upsert_account(&mut self, py: Python<'_>, account_json: &str) -> PyResult<()> {
        let a: AccountIn = serde_json::from_str(account_json)
            .map_err(|e| to_py(py, CoreError::book(format!("account JSON: {e}"))))?;
        py_result(py, self.inner.upsert_account(&a))
    }

    /// Sets live marks: all of them, or none if any is wrong.
    fn update_prices(&mut self, prices: &Bound<'_, PyDict>) -> PyResult<()> {
        let py = prices.py();
        let mut batch = Vec::with_capacity(prices.len());
        for (sym, px) in prices.iter() {
            let sym: String = sym.extract()?;
            let px: f64 = px.extract().map_err(|e| {
                to_py(py, CoreError::order(format!("price: {e}")).at(["prices", sym.as_str()]))
            })?;
            batch.push((sym, px));
        }
        py_result(py, self.inner.book.update_prices(&batch))
    }

    /// Books an execution for one account.
    fn apply_fill(
        &mut self,
        py: Python<'_>,
        account_id: &str,
        symbol: &str,
        side: &str,
        quantity: &Bound<'_, PyAny>,
        price: f64,
    ) -> PyResult<()> {
        let side = py_result(py, Side::parse(side))?;
        let quantity = quantity_arg(quantity)?;
        py_result(py, self.inner.apply_fill(account_id, symbol, side, quantity, price))
    }

    /// Releases working quantity that will not fill (cancelled or expired).
    fn release(
        &mut self,
        py: Python<'_>,
        account_id: &str,
        symbol: &str,
        side: &str,
        quantity: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let side = py_result(py, Side::parse(side))?;
        let quantity = quantity_arg(quantity)?;
        py_result(py, self.inner.book.release(account_id, symbol, side, quantity))
    }

    /// Hands an execution of an accepted block to its accounts and books their shares.
    /// Returns None for an execution id already booked, else one tuple per account touched:
    /// (account_id, quantity, filled, avg_price, cash_delta).
    fn execution(
        &mut self,
        py: Python<'_>,
        order_id: &str,
        exec_id: &str,
        quantity: &Bound<'_, PyAny>,
        price: f64,
    ) -> PyResult<Option<Vec<FillRow>>> {
        let quantity = quantity_arg(quantity)?;
        let fills = py_result(py, self.inner.execution(order_id, exec_id, quantity, price))?;
        Ok(fills.map(|v| {
            v.into_iter()
                .map(|f| {
                    (f.account_id.to_string(), f.quantity, f.filled, f.avg_price, f.cash_delta)
                })
                .collect()
        }))
    }

    /// Ends a block: (account_id, allocated, filled, shortfall, carried) per account.
    fn close_block(
        &mut self,
        py: Python<'_>,
        order_id: &str,
        reason: &str,
    ) -> PyResult<Vec<ShortfallRow>> {
        let reason = py_result(py, CloseReason::parse(reason))?;
        let out = py_result(py, self.inner.close_block(order_id, reason))?;
        Ok(out
            .into_iter()
            .map(|s| (s.account_id.to_string(), s.allocated, s.filled, s.shortfall, s.carried))
            .collect())
    }

    fn set_kill_switch(&mut self, py: Python<'_>, mode: &str) -> PyResult<()> {
        let m = py_result(py, KillSwitch::parse(mode))?;
        self.inner.set_kill_switch(m);
        Ok(())
    }

    #[getter]
    fn kill_switch(&self) -> &'static str {
        match self.inner.book.kill_switch {
            KillSwitch::Normal => "normal",
            KillSwitch::Reducing => "reducing",
            KillSwitch::Halted => "halted",
        }
    }

    /// Current position of an account in a symbol.
    fn position(&self, py: Python<'_>, account_id: &str, symbol: &str) -> PyResult<i64> {
        let i = py_result(py, self.inner.book.account(account_id))?;
        let k = py_result(py, self.inner.book.symbol(symbol))?;
        Ok(self.inner.book.accounts[i].position(k))
    }

    /// Cash, settled cash and reserved cash of an account.
    fn cash(&self, py: Python<'_>, account_id: &str) -> PyResult<(f64, f64, f64)> {
        let i = py_result(py, self.inner.book.account(account_id))?;
        let a = &self.inner.book.accounts[i];
        Ok((a.cash, a.settled_cash, a.reserved_cash))
    }

    /// Working (buy, sell) quantity of an account in a symbol.
    fn open_orders(&self, py: Python<'_>, account_id: &str, symbol: &str) -> PyResult<(i64, i64)> {
        let i = py_result(py, self.inner.book.account(account_id))?;
        let k = py_result(py, self.inner.book.symbol(symbol))?;
        Ok(self.inner.book.accounts[i].open(k).map(|o| (o.buy, o.sell)).unwrap_or((0, 0)))
    }

    #[getter]
    fn account_count(&self) -> usize {
        self.inner.book.accounts.len()
    }

    /// Exposure of one account at marks and its use of its mandate's limits, as JSON.
    fn exposure(&self, py: Python<'_>, account_id: &str) -> PyResult<String> {
        let i = py_result(py, self.inner.book.account(account_id))?;
        let e = crate::exposure::account_exposure(&self.inner.book, i);
        Ok(serde_json::to_string(&e).expect("exposure serializes"))
    }

    /// The firm's exposure at marks and its use of the firm-wide limits, as JSON.
    fn firm_exposure(&self) -> String {
        let e = crate::exposure::firm_exposure(&self.inner.book);
        serde_json::to_string(&e).expect("exposure serializes")
    }

    /// The accounts holding a position in a symbol, in book order.
    fn holders(&self, py: Python<'_>, symbol: &str) -> PyResult<Vec<String>> {
        let k = py_result(py, self.inner.book.symbol(symbol))?;
        let b = &self.inner.book;
        Ok(crate::exposure::holders(b, k)
            .into_iter()
            .map(|i| b.accounts[i].account_id.to_string())
            .collect())
    }

    /// The live state (cash, settled and reserved cash, positions and working orders by
    /// symbol) of the accounts `ids` in that order, or of every account in book order, as JSON.
    #[pyo3(signature = (ids=None))]
    fn accounts_json(&self, py: Python<'_>, ids: Option<Vec<String>>) -> PyResult<String> {
        let b = &self.inner.book;
        let rows_of: Vec<usize> = match ids {
            None => (0..b.accounts.len()).collect(),
            Some(ids) => {
                ids.iter().map(|id| py_result(py, b.account(id))).collect::<PyResult<_>>()?
            }
        };
        let rows: Vec<serde_json::Value> = rows_of
            .iter()
            .map(|&i| {
                let a = &b.accounts[i];
                let positions: serde_json::Map<String, serde_json::Value> = a
                    .positions
                    .iter()
                    .map(|&(k, q)| (b.instruments[k].symbol.clone(), q.into()))
                    .collect();
                let open: serde_json::Map<String, serde_json::Value> = a
                    .open_orders
                    .iter()
                    .filter(|(_, o)| o.buy != 0 || o.sell != 0)
                    .map(|(k, o)| {
                        let v = serde_json::json!({"buy": o.buy, "sell": o.sell,
                                                   "buy_reserved": o.buy_reserved});
                        (b.instruments[*k].symbol.clone(), v)
                    })
                    .collect();
                serde_json::json!({
                    "account_id": &*a.account_id,
                    "cash": a.cash,
                    "settled_cash": a.settled_cash,
                    "reserved_cash": a.reserved_cash,
                    "positions": positions,
                    "open_orders": open,
                })
            })
            .collect();
        Ok(serde_json::Value::Array(rows).to_string())
    }

    /// The child order ids of a committed block (one per broker of its accounts).
    fn child_orders(&self, py: Python<'_>, order_id: &str) -> PyResult<Vec<String>> {
        self.inner.children.get(order_id).cloned().ok_or_else(|| {
            to_py(py, CoreError::order(format!("no committed block with order id {order_id:?}")))
        })
    }
}

/// The core's answer for one block. `to_json()` gives every detail.
#[pyclass(module = "mats._core", frozen)]
pub struct Decision {
    inner: crate::decision::Decision,
}

#[pymethods]
impl Decision {
    #[getter]
    fn order_id(&self) -> &str {
        &self.inner.order_id
    }

    #[getter]
    fn journey_id(&self) -> &str {
        &self.inner.journey_id
    }

    #[getter]
    fn accepted(&self) -> bool {
        self.inner.status == crate::decision::Status::Accepted
    }

    #[getter]
    fn status(&self) -> &'static str {
        match self.inner.status {
            crate::decision::Status::Accepted => "accepted",
            crate::decision::Status::Rejected => "rejected",
        }
    }

    #[getter]
    fn stage(&self) -> Option<&'static str> {
        self.inner.stage.map(|s| match s {
            crate::decision::Stage::L1 => "l1",
            crate::decision::Stage::Allocation => "allocation",
            crate::decision::Stage::L2 => "l2",
        })
    }

    #[getter]
    fn requested_quantity(&self) -> i64 {
        self.inner.requested_quantity
    }

    #[getter]
    fn placed_quantity(&self) -> i64 {
        self.inner.placed_quantity
    }

    #[getter]
    fn unplaced_quantity(&self) -> i64 {
        self.inner.unplaced_quantity
    }

    /// Reason codes of layer 1.
    #[getter]
    fn l1_codes(&self) -> Vec<&'static str> {
        self.inner.l1_breaches.iter().map(|c| c.code.as_str()).collect()
    }

    /// Shares per account, for the accounts that get some.
    fn quantities(&self) -> Vec<(String, i64)> {
        self.inner.quantities().map(|(a, q)| (a.to_owned(), q)).collect()
    }

    fn to_json(&self) -> String {
        self.inner.to_json()
    }

    fn __repr__(&self) -> String {
        format!(
            "Decision(order_id={:?}, status={:?}, placed={}, unplaced={})",
            self.inner.order_id,
            self.status(),
            self.inner.placed_quantity,
            self.inner.unplaced_quantity
        )
    }
}
