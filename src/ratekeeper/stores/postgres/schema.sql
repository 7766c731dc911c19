-- ratekeeper PostgreSQL schema: a line-by-line port of ratekeeper.algorithms (same tolerances,
-- named as in ratekeeper.algorithms.base; same float operations in the same order), tested against the Python reference on the same
-- traces. Rendered by psycopg.sql with quoted identifiers: {state}, {meta}, {f_*}.
-- Statements are separated by lines holding only "--;;".
-- Every float is float8 (IEEE double, as in Python); "int(x)" of Python is trunc(x).

CREATE TABLE IF NOT EXISTS {state} (
    key text COLLATE "C" NOT NULL,
    part text COLLATE "C" NOT NULL,
    state float8[],
    ids text[],
    expires_at timestamptz NOT NULL,
    PRIMARY KEY (key, part)
) WITH (fillfactor = 70)
--;;
-- Python's float floor division a // b (the exact floor of the real quotient): floor(a / b)
-- can round up to an integer the true quotient is just below; the exact sign of a - n*b
-- (Dekker's two-product) corrects it.
CREATE OR REPLACE FUNCTION {f_floordiv}(a float8, b float8) RETURNS float8
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $rk$
DECLARE
    n float8 := floor(a / b);
    p float8;
    c float8;
    ah float8;
    al float8;
    bh float8;
    bl float8;
BEGIN
    IF n = 0 OR b = 0 THEN
        RETURN n;
    END IF;
    p := n * b;
    c := 134217729.0::float8 * n;
    ah := c - (c - n);
    al := n - ah;
    c := 134217729.0::float8 * b;
    bh := c - (c - b);
    bl := b - bh;
    IF (a - p) - (((ah * bh - p) + ah * bl + al * bh) + al * bl) < 0 THEN
        n := n - 1;
    END IF;
    RETURN n;
END
$rk$
--;;
CREATE OR REPLACE FUNCTION {f_token_bucket}(
    st float8[], now float8, cost float8, amount float8, per float8, cap float8,
    OUT ns float8[], OUT ok boolean, OUT remaining float8, OUT reset_after float8,
    OUT retry_after float8, OUT delay float8)
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $rk$
DECLARE
    eps_units CONSTANT float8 := 1e-9;  -- ratekeeper.algorithms.base.EPS_UNITS
    eps_clock CONSTANT float8 := 2.220446049250313e-16;  -- EPS_CLOCK, 2**-52
    max_clock_slack CONSTANT float8 := 0.25;  -- MAX_CLOCK_SLACK
    rate float8 := amount / per;
    slack float8 := eps_units + least(rate * abs(now) * eps_clock, max_clock_slack);
    tokens float8;
    last float8;
    avail float8;
BEGIN
    delay := 0;
    IF st IS NULL THEN
        tokens := cap;
        last := now;
    ELSE
        tokens := st[1];
        last := st[2];
        IF now > last THEN
            tokens := least(cap, tokens + (now - last) * rate);
            last := now;
        END IF;
    END IF;
    avail := tokens + slack;
    IF cost <= avail OR cost = 0 THEN
        tokens := tokens - cost;  -- may dip below zero by the slack: a debt, kept
        avail := tokens + slack;
        ns := ARRAY[tokens, last];
        ok := true;
        retry_after := 0;
    ELSE
        ns := st;
        ok := false;
        retry_after := CASE WHEN cost > cap THEN 'Infinity'::float8 ELSE (cost - tokens) / rate END;
    END IF;
    remaining := CASE WHEN avail > 0 THEN floor(avail) ELSE 0 END;
    reset_after := (cap - tokens) / rate;
END
$rk$
--;;
-- GCRA, and the leaky bucket when shaping (then delay = the backlog). State: the TAT as an exact
-- sum of two floats [high, low]; a one-element state (older versions) reads as low = 0.
CREATE OR REPLACE FUNCTION {f_gcra}(
    st float8[], now float8, cost float8, amount float8, per float8, cap float8, shaping boolean,
    OUT ns float8[], OUT ok boolean, OUT remaining float8, OUT reset_after float8,
    OUT retry_after float8, OUT delay float8)
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $rk$
DECLARE
    eps_units CONSTANT float8 := 1e-9;  -- ratekeeper.algorithms.base.EPS_UNITS
    eps_clock CONSTANT float8 := 2.220446049250313e-16;  -- EPS_CLOCK, 2**-52
    max_clock_slack CONSTANT float8 := 0.25;  -- MAX_CLOCK_SLACK
    iv float8 := per / amount;
    slack float8 := eps_units + least((amount / per) * abs(now) * eps_clock, max_clock_slack);
    backlog float8 := 0;
    after float8;
    high float8;
    part float8;
    low float8;
    avail float8;
BEGIN
    delay := 0;
    IF st IS NOT NULL THEN
        backlog := (st[1] - now) + coalesce(st[2], 0);
        IF NOT backlog > 0 THEN
            backlog := 0;
        END IF;
    END IF;
    avail := (cap - backlog / iv) + slack;
    IF cost <= avail OR cost = 0 THEN
        after := backlog + cost * iv;
        high := now + after;  -- TwoSum: high + low is now + after exactly
        part := high - now;
        low := (now - (high - part)) + (after - part);
        ns := ARRAY[high, low];
        ok := true;
        part := (high - now) + low;  -- the backlog the next request will see
        avail := (cap - CASE WHEN part > 0 THEN part ELSE 0 END / iv) + slack;
        reset_after := after;
        retry_after := 0;
        IF shaping THEN
            delay := backlog;
        END IF;
    ELSE
        ns := st;
        ok := false;
        reset_after := backlog;
        retry_after := CASE WHEN cost > cap THEN 'Infinity'::float8
                            ELSE backlog + cost * iv - cap * iv END;
    END IF;
    remaining := CASE WHEN avail > 0 THEN floor(avail) ELSE 0 END;
END
$rk$
--;;
CREATE OR REPLACE FUNCTION {f_fixed_window}(
    st float8[], now float8, cost float8, amount float8, per float8, cap float8,
    OUT ns float8[], OUT ok boolean, OUT remaining float8, OUT reset_after float8,
    OUT retry_after float8, OUT delay float8)
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $rk$
DECLARE
    eps_time CONSTANT float8 := 1e-6;  -- ratekeeper.algorithms.base.EPS_TIME
    eps_units CONSTANT float8 := 1e-9;  -- ratekeeper.algorithms.base.EPS_UNITS
    k float8 := {f_floordiv}(now + eps_time, per);
    cnt float8 := 0;
    endt float8;
    avail float8;
BEGIN
    delay := 0;
    IF st IS NOT NULL THEN
        IF st[1] = k THEN
            cnt := st[2];
        ELSIF st[1] > k THEN
            k := st[1];
            cnt := st[2];
        END IF;
    END IF;
    endt := (k + 1) * per - now;
    IF cost <= amount - cnt + eps_units OR cost = 0 THEN
        cnt := cnt + cost;
        ns := ARRAY[k, cnt];
        ok := true;
        retry_after := 0;
    ELSE
        ns := st;
        ok := false;
        retry_after := CASE WHEN cost > amount THEN 'Infinity'::float8 ELSE endt END;
    END IF;
    avail := amount - cnt + eps_units;
    remaining := CASE WHEN avail > 0 THEN floor(avail) ELSE 0 END;
    reset_after := CASE WHEN cnt <> 0 THEN endt ELSE 0 END;
END
$rk$
--;;
CREATE OR REPLACE FUNCTION {f_sliding_window}(
    st float8[], now float8, cost float8, amount float8, per float8, cap float8,
    OUT ns float8[], OUT ok boolean, OUT remaining float8, OUT reset_after float8,
    OUT retry_after float8, OUT delay float8)
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $rk$
DECLARE
    eps_time CONSTANT float8 := 1e-6;  -- ratekeeper.algorithms.base.EPS_TIME
    eps_units CONSTANT float8 := 1e-9;  -- ratekeeper.algorithms.base.EPS_UNITS
    t float8 := now + eps_time;
    k float8 := {f_floordiv}(t, per);
    prev float8 := 0;
    cur float8 := 0;
    start float8;
    elapsed float8;
    weight float8;
    avail float8;
BEGIN
    delay := 0;
    IF st IS NOT NULL THEN
        IF st[1] = k THEN
            prev := st[2];
            cur := st[3];
        ELSIF st[1] = k - 1 THEN
            prev := st[3];
        ELSIF st[1] > k THEN
            k := st[1];
            prev := st[2];
            cur := st[3];
        END IF;
    END IF;
    start := k * per;
    elapsed := least(greatest(t - start, 0::float8), per);
    weight := 1 - elapsed / per;  -- of the previous window's count
    avail := amount - (prev * weight + cur) + eps_units;
    IF cost <= avail OR cost = 0 THEN
        cur := cur + cost;
        avail := amount - (prev * weight + cur) + eps_units;
        ns := ARRAY[k, prev, cur];
        ok := true;
        retry_after := 0;
    ELSE
        ns := st;
        ok := false;
        IF cost > amount THEN
            retry_after := 'Infinity'::float8;
        ELSIF prev <> 0 AND cur + cost <= amount THEN
            retry_after := start + per * (1 - (amount - cur - cost) / prev) - now;
        ELSE
            retry_after := start + per + per * (1 - (amount - cost) / cur) - now;
        END IF;
        retry_after := greatest(retry_after, 0::float8);
    END IF;
    remaining := CASE WHEN avail > 0 THEN floor(avail) ELSE 0 END;
    IF cur <> 0 THEN
        reset_after := start + 2 * per - now;
    ELSIF prev <> 0 THEN
        reset_after := start + per - now;
    ELSE
        reset_after := 0;
    END IF;
END
$rk$
--;;
-- Sliding log. State: [t1, c1, t2, c2, ...], sorted by time.
CREATE OR REPLACE FUNCTION {f_sliding_log}(
    st float8[], now float8, cost float8, amount float8, per float8, cap float8,
    OUT ns float8[], OUT ok boolean, OUT remaining float8, OUT reset_after float8,
    OUT retry_after float8, OUT delay float8)
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $rk$
DECLARE
    eps_time CONSTANT float8 := 1e-6;  -- ratekeeper.algorithms.base.EPS_TIME
    eps_units CONSTANT float8 := 1e-9;  -- ratekeeper.algorithms.base.EPS_UNITS
    cutoff float8 := now + eps_time - per;
    kept float8[] := ARRAY[]::float8[];
    used float8 := 0;
    newest float8 := NULL;
    freed float8;
    avail float8;
    i int;
    j int;
BEGIN
    delay := 0;
    IF st IS NOT NULL THEN
        FOR i IN 1 .. coalesce(array_length(st, 1), 0) / 2 LOOP
            IF st[2 * i - 1] > cutoff THEN
                kept := kept || ARRAY[st[2 * i - 1], st[2 * i]];
                used := used + st[2 * i];
                newest := greatest(newest, st[2 * i - 1]);
            END IF;
        END LOOP;
    END IF;
    avail := amount - used + eps_units;
    IF cost <= avail OR cost = 0 THEN
        IF cost <> 0 THEN
            -- keep the log sorted by time (after equal times), as the Python reference does
            j := cardinality(kept) / 2;
            WHILE j > 0 AND kept[2 * j - 1] > now LOOP
                j := j - 1;
            END LOOP;
            kept := kept[1:2 * j] || ARRAY[now, cost] || kept[2 * j + 1:cardinality(kept)];
            newest := greatest(newest, now);
        END IF;
        avail := amount - (used + cost) + eps_units;
        ns := CASE WHEN cardinality(kept) > 0 THEN kept END;
        ok := true;
        reset_after := CASE WHEN newest IS NULL THEN 0 ELSE newest + per - now END;
        retry_after := 0;
    ELSE
        ns := st;
        ok := false;
        IF cost > amount THEN
            retry_after := 'Infinity'::float8;
        ELSE
            freed := used + cost - amount;
            retry_after := 0;
            FOR j IN 1 .. cardinality(kept) / 2 LOOP  -- oldest first
                freed := freed - kept[2 * j];
                IF freed <= eps_units THEN
                    retry_after := kept[2 * j - 1] + per - now;
                    EXIT;
                END IF;
            END LOOP;
        END IF;
        retry_after := greatest(retry_after, 0::float8);
        reset_after := CASE WHEN newest IS NULL THEN 0 ELSE newest + per - now END;
    END IF;
    remaining := CASE WHEN avail > 0 THEN floor(avail) ELSE 0 END;
END
$rk$
--;;
CREATE OR REPLACE FUNCTION {f_apply}(
    algo text, st float8[], now float8, cost float8, amount float8, per float8, cap float8,
    OUT ns float8[], OUT ok boolean, OUT remaining float8, OUT reset_after float8,
    OUT retry_after float8, OUT delay float8)
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $rk$
DECLARE
    r record;
BEGIN
    -- "r := f(...)" is a plpgsql simple expression: much cheaper than SELECT ... INTO.
    IF algo = 'token_bucket' THEN
        r := {f_token_bucket}(st, now, cost, amount, per, cap);
    ELSIF algo = 'gcra' THEN
        r := {f_gcra}(st, now, cost, amount, per, cap, false);
    ELSIF algo = 'leaky_bucket' THEN
        r := {f_gcra}(st, now, cost, amount, per, cap, true);
    ELSIF algo = 'fixed_window' THEN
        r := {f_fixed_window}(st, now, cost, amount, per, cap);
    ELSIF algo = 'sliding_window' THEN
        r := {f_sliding_window}(st, now, cost, amount, per, cap);
    ELSIF algo = 'sliding_log' THEN
        r := {f_sliding_log}(st, now, cost, amount, per, cap);
    ELSE
        RAISE EXCEPTION 'ratekeeper: unknown algorithm %', algo;
    END IF;
    ns := r.ns;
    ok := r.ok;
    remaining := r.remaining;
    reset_after := r.reset_after;
    retry_after := r.retry_after;
    delay := r.delay;
END
$rk$
--;;
-- Deletes up to `batch` expired rows, skipping rows another transaction holds. Returns the count.
CREATE OR REPLACE FUNCTION {f_cleanup}(batch int) RETURNS int
LANGUAGE plpgsql AS $rk$
DECLARE
    n int;
BEGIN
    DELETE FROM {state} WHERE ctid = ANY(ARRAY(
        SELECT ctid FROM {state} WHERE expires_at < clock_timestamp()
        LIMIT batch FOR UPDATE SKIP LOCKED));
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$rk$
--;;
-- One decision over every limit of a rule for one key, all-or-nothing, in one transaction.
-- p_now NULL = the server's clock. Rows are locked in (key, part) order: no deadlocks.
-- Returns 5 floats per limit, in the rule's order: ok (1/0), remaining, reset_after,
-- retry_after, delay. A denial describes the limits that would have passed without this cost.
CREATE OR REPLACE FUNCTION {f_hit}(
    p_key text, p_parts text[], p_algo text, p_amounts float8[], p_pers float8[],
    p_caps float8[], p_horizons float8[], p_cost float8, p_now float8, p_write boolean,
    p_extra float8, p_cleanup int)
RETURNS float8[]
LANGUAGE plpgsql AS $rk$
DECLARE
    now_ float8 := coalesce(p_now, extract(epoch FROM clock_timestamp())::float8);
    n int := cardinality(p_parts);
    olds text[] := ARRAY[]::text[];
    oks boolean[] := ARRAY[]::boolean[];
    out_ float8[] := ARRAY[]::float8[];
    all_ok boolean := true;
    st float8[];
    r record;
    i int;
    locked int;
BEGIN
    IF n = 1 THEN
        -- One row: lock it (creating it if needed), decide, write. No lock order to keep.
        IF p_write THEN
            -- A row we waited for may be deleted by its holder (or by cleanup): then nothing is
            -- locked, so create it again and lock that, until we hold the row we write.
            LOOP
                SELECT CASE WHEN s.expires_at > clock_timestamp() THEN s.state END INTO st
                FROM {state} AS s WHERE s.key = p_key AND s.part = p_parts[1] FOR UPDATE;
                EXIT WHEN FOUND;
                INSERT INTO {state} (key, part, state, expires_at)
                VALUES (p_key, p_parts[1], NULL, clock_timestamp()) ON CONFLICT DO NOTHING;
            END LOOP;
        ELSE
            SELECT CASE WHEN s.expires_at > clock_timestamp() THEN s.state END INTO st
            FROM {state} AS s WHERE s.key = p_key AND s.part = p_parts[1];
        END IF;
        r := {f_apply}(p_algo, st, now_, p_cost, p_amounts[1], p_pers[1],
                                       p_caps[1]);
        IF r.ok AND p_write THEN
            IF r.ns IS NULL THEN
                DELETE FROM {state} WHERE key = p_key AND part = p_parts[1];
            ELSE
                -- a state in debt (an unconditional charge) is kept until it is repaid
                UPDATE {state} SET state = r.ns,
                    expires_at = clock_timestamp()
                        + make_interval(secs => greatest(p_horizons[1], r.reset_after) + p_extra)
                WHERE key = p_key AND part = p_parts[1];
            END IF;
        END IF;
        IF p_cleanup > 0 THEN
            PERFORM {f_cleanup}(p_cleanup);
        END IF;
        RETURN ARRAY[CASE WHEN r.ok THEN 1 ELSE 0 END, r.remaining, r.reset_after,
                     r.retry_after, r.delay]::float8[];
    END IF;
    -- Several rows: create the missing ones, then lock all in (key, part) order; again while a
    -- row we waited for was deleted meanwhile (we must hold every row we write).
    IF p_write THEN
        LOOP
            INSERT INTO {state} (key, part, state, expires_at)
            SELECT p_key, p, NULL, clock_timestamp() FROM unnest(p_parts) AS p ORDER BY p
            ON CONFLICT DO NOTHING;
            PERFORM 1 FROM {state} WHERE key = p_key AND part = ANY(p_parts) ORDER BY part
            FOR UPDATE;
            GET DIAGNOSTICS locked = ROW_COUNT;
            EXIT WHEN locked = n;
        END LOOP;
    END IF;
    FOR i IN 1 .. n LOOP
        st := NULL;
        SELECT CASE WHEN s.expires_at > clock_timestamp() THEN s.state END INTO st
        FROM {state} AS s WHERE s.key = p_key AND s.part = p_parts[i];
        olds := olds || st::text;
        r := {f_apply}(p_algo, st, now_, p_cost, p_amounts[i], p_pers[i], p_caps[i]);
        oks := oks || r.ok;
        all_ok := all_ok AND r.ok;
        out_ := out_ || ARRAY[CASE WHEN r.ok THEN 1 ELSE 0 END, r.remaining, r.reset_after,
                              r.retry_after, r.delay]::float8[];
    END LOOP;
    IF all_ok AND p_write OR NOT all_ok THEN
        FOR i IN 1 .. n LOOP
            IF all_ok THEN
                r := {f_apply}(p_algo, olds[i]::float8[], now_, p_cost,
                                               p_amounts[i], p_pers[i], p_caps[i]);
                IF r.ns IS NULL THEN
                    DELETE FROM {state} WHERE key = p_key AND part = p_parts[i];
                ELSE
                    UPDATE {state} SET state = r.ns,
                        expires_at = clock_timestamp()
                            + make_interval(secs => greatest(p_horizons[i], r.reset_after)
                                                    + p_extra)
                    WHERE key = p_key AND part = p_parts[i];
                END IF;
            ELSIF oks[i] THEN
                r := {f_apply}(p_algo, olds[i]::float8[], now_, 0,
                                               p_amounts[i], p_pers[i], p_caps[i]);
                out_[5 * i - 4] := CASE WHEN r.ok THEN 1 ELSE 0 END;
                out_[5 * i - 3] := r.remaining;
                out_[5 * i - 2] := r.reset_after;
                out_[5 * i - 1] := r.retry_after;
                out_[5 * i] := r.delay;
            END IF;
        END LOOP;
    END IF;
    IF p_cleanup > 0 THEN
        PERFORM {f_cleanup}(p_cleanup);
    END IF;
    RETURN out_;
END
$rk$
--;;
-- Concurrency leases of one key: state = deadlines, ids = lease ids (same order).
-- Returns 0 when granted, else the seconds until the earliest lease expires.
CREATE OR REPLACE FUNCTION {f_lease_acquire}(
    p_key text, p_id text, p_limit int, p_ttl float8, p_now float8, p_extra float8)
RETURNS float8
LANGUAGE plpgsql AS $rk$
DECLARE
    now_ float8 := coalesce(p_now, extract(epoch FROM clock_timestamp())::float8);
    dls float8[];
    lids text[];
    kd float8[] := ARRAY[]::float8[];
    ki text[] := ARRAY[]::text[];
    i int;
BEGIN
    -- The last release deletes the row: an acquire that waited for its lock then finds none, and
    -- must create and lock it again (granting without a locked row would write nothing).
    LOOP
        INSERT INTO {state} (key, part, state, expires_at)
        VALUES (p_key, 'concurrency', NULL, clock_timestamp()) ON CONFLICT DO NOTHING;
        SELECT CASE WHEN s.expires_at > clock_timestamp() THEN s.state END,
               CASE WHEN s.expires_at > clock_timestamp() THEN s.ids END
        INTO dls, lids
        FROM {state} AS s WHERE s.key = p_key AND s.part = 'concurrency' FOR UPDATE;
        EXIT WHEN FOUND;
    END LOOP;
    FOR i IN 1 .. coalesce(cardinality(dls), 0) LOOP
        IF dls[i] > now_ AND lids[i] <> p_id THEN
            kd := kd || dls[i];
            ki := ki || lids[i];
        END IF;
    END LOOP;
    IF cardinality(kd) < p_limit THEN
        kd := kd || (now_ + p_ttl);
        ki := ki || p_id;
        UPDATE {state} SET state = kd, ids = ki,
            expires_at = clock_timestamp()
                + make_interval(secs => greatest((SELECT max(d) FROM unnest(kd) AS d) - now_, 0)
                                        + p_extra)
        WHERE key = p_key AND part = 'concurrency';
        RETURN 0;
    END IF;
    RETURN greatest((SELECT min(d) FROM unnest(kd) AS d) - now_, 0);
END
$rk$
--;;
CREATE OR REPLACE FUNCTION {f_lease_release}(p_key text, p_id text, p_now float8, p_extra float8)
RETURNS void
LANGUAGE plpgsql AS $rk$
DECLARE
    now_ float8 := coalesce(p_now, extract(epoch FROM clock_timestamp())::float8);
    dls float8[];
    lids text[];
    kd float8[] := ARRAY[]::float8[];
    ki text[] := ARRAY[]::text[];
    i int;
BEGIN
    SELECT CASE WHEN s.expires_at > clock_timestamp() THEN s.state END,
           CASE WHEN s.expires_at > clock_timestamp() THEN s.ids END
    INTO dls, lids
    FROM {state} AS s WHERE s.key = p_key AND s.part = 'concurrency' FOR UPDATE;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    FOR i IN 1 .. coalesce(cardinality(dls), 0) LOOP
        IF dls[i] > now_ AND lids[i] <> p_id THEN
            kd := kd || dls[i];
            ki := ki || lids[i];
        END IF;
    END LOOP;
    IF cardinality(kd) = 0 THEN
        DELETE FROM {state} WHERE key = p_key AND part = 'concurrency';
    ELSE
        UPDATE {state} SET state = kd, ids = ki,
            expires_at = clock_timestamp()
                + make_interval(secs => greatest((SELECT max(d) FROM unnest(kd) AS d) - now_, 0)
                                        + p_extra)
        WHERE key = p_key AND part = 'concurrency';
    END IF;
END
$rk$
--;;
-- An unconditional charge (ratekeeper.algorithms: each algorithm's `charge`): the cost already
-- happened, so the budget may go into debt. Returns the new state.
CREATE OR REPLACE FUNCTION {f_charge}(
    algo text, st float8[], now float8, cost float8, amount float8, per float8, cap float8)
RETURNS float8[]
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $rk$
DECLARE
    eps_time CONSTANT float8 := 1e-6;  -- ratekeeper.algorithms.base.EPS_TIME
    tokens float8;
    last float8;
    backlog float8 := 0;
    after float8;
    high float8;
    part float8;
    k float8;
    prev float8 := 0;
    cur float8 := 0;
    cutoff float8;
    kept float8[] := ARRAY[]::float8[];
    i int;
    j int;
BEGIN
    IF algo = 'token_bucket' THEN
        IF st IS NULL THEN
            tokens := cap;
            last := now;
        ELSE
            tokens := st[1];
            last := st[2];
            IF now > last THEN
                tokens := least(cap, tokens + (now - last) * (amount / per));
                last := now;
            END IF;
        END IF;
        RETURN ARRAY[tokens - cost, last];
    ELSIF algo = 'gcra' OR algo = 'leaky_bucket' THEN
        IF st IS NOT NULL THEN
            backlog := (st[1] - now) + coalesce(st[2], 0);
            IF NOT backlog > 0 THEN
                backlog := 0;
            END IF;
        END IF;
        after := backlog + cost * (per / amount);
        high := now + after;  -- TwoSum, as in f_gcra
        part := high - now;
        RETURN ARRAY[high, (now - (high - part)) + (after - part)];
    ELSIF algo = 'fixed_window' THEN
        k := {f_floordiv}(now + eps_time, per);
        IF st IS NULL THEN
            RETURN ARRAY[k, cost];
        ELSIF st[1] > k THEN
            RETURN ARRAY[st[1], st[2] + cost];
        ELSIF st[1] = k THEN
            RETURN ARRAY[k, st[2] + cost];
        END IF;
        RETURN ARRAY[k, 0 + cost];
    ELSIF algo = 'sliding_window' THEN
        k := {f_floordiv}(now + eps_time, per);
        IF st IS NOT NULL THEN
            IF st[1] = k THEN
                prev := st[2];
                cur := st[3];
            ELSIF st[1] = k - 1 THEN
                prev := st[3];
            ELSIF st[1] > k THEN
                k := st[1];
                prev := st[2];
                cur := st[3];
            END IF;
        END IF;
        RETURN ARRAY[k, prev, cur + cost];
    ELSIF algo = 'sliding_log' THEN
        cutoff := now + eps_time - per;
        FOR i IN 1 .. coalesce(cardinality(st), 0) / 2 LOOP
            IF st[2 * i - 1] > cutoff THEN
                kept := kept || ARRAY[st[2 * i - 1], st[2 * i]];
            END IF;
        END LOOP;
        IF cost <> 0 THEN
            j := cardinality(kept) / 2;
            WHILE j > 0 AND kept[2 * j - 1] > now LOOP
                j := j - 1;
            END LOOP;
            kept := kept[1:2 * j] || ARRAY[now, cost] || kept[2 * j + 1:cardinality(kept)];
        END IF;
        RETURN CASE WHEN cardinality(kept) > 0 THEN kept END;
    END IF;
    RAISE EXCEPTION 'ratekeeper: unknown algorithm %', algo;
END
$rk$
--;;
-- A refund of `amt` units charged at time `at` (each algorithm's `refund`): never past the full
-- budget; for windows only while the window charged still counts. Returns the new state.
CREATE OR REPLACE FUNCTION {f_refund}(
    algo text, st float8[], now float8, amt float8, amount float8, per float8, cap float8,
    at float8)
RETURNS float8[]
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $rk$
DECLARE
    eps_time CONSTANT float8 := 1e-6;  -- ratekeeper.algorithms.base.EPS_TIME
    tokens float8;
    last float8;
    backlog float8;
    high float8;
    part float8;
    k float8;
    left_ float8;
    i int;
BEGIN
    IF st IS NULL THEN
        RETURN NULL;
    END IF;
    IF algo = 'token_bucket' THEN
        tokens := st[1];
        last := st[2];
        IF now > last THEN
            tokens := least(cap, tokens + (now - last) * (amount / per));
            last := now;
        END IF;
        RETURN ARRAY[least(tokens + amt, cap), last];
    ELSIF algo = 'gcra' OR algo = 'leaky_bucket' THEN
        backlog := (st[1] - now) + coalesce(st[2], 0);
        IF NOT backlog > 0 THEN
            backlog := 0;
        END IF;
        backlog := backlog - amt * (per / amount);
        IF NOT backlog > 0 THEN
            backlog := 0;
        END IF;
        high := now + backlog;
        part := high - now;
        RETURN ARRAY[high, (now - (high - part)) + (backlog - part)];
    ELSIF algo = 'fixed_window' THEN
        IF st[1] <> {f_floordiv}(at + eps_time, per) THEN
            RETURN st;
        END IF;
        RETURN ARRAY[st[1], greatest(st[2] - amt, 0::float8)];
    ELSIF algo = 'sliding_window' THEN
        k := {f_floordiv}(at + eps_time, per);
        IF st[1] = k THEN
            RETURN ARRAY[st[1], st[2], greatest(st[3] - amt, 0::float8)];
        ELSIF st[1] = k + 1 THEN
            RETURN ARRAY[st[1], greatest(st[2] - amt, 0::float8), st[3]];
        END IF;
        RETURN st;
    ELSIF algo = 'sliding_log' THEN
        FOR i IN REVERSE coalesce(cardinality(st), 0) / 2 .. 1 LOOP
            IF st[2 * i - 1] = at THEN
                left_ := st[2 * i] - amt;
                IF left_ > 0 THEN
                    st[2 * i] := left_;
                    RETURN st;
                END IF;
                st := st[1:2 * i - 2] || st[2 * i + 1:cardinality(st)];
                RETURN CASE WHEN cardinality(st) > 0 THEN st END;
            END IF;
            EXIT WHEN st[2 * i - 1] < at;
        END LOOP;
        RETURN st;
    END IF;
    RAISE EXCEPTION 'ratekeeper: unknown algorithm %', algo;
END
$rk$
--;;
-- One check on one limit (ratekeeper.algorithms.checks.step): mode 0 a hit keeping `keep` units
-- back (a priority class's share), 1 an unconditional charge, 2 a refund of units charged at `at`.
CREATE OR REPLACE FUNCTION {f_step}(
    algo text, st float8[], now float8, cost float8, amount float8, per float8, cap float8,
    mode int, keep float8, at float8,
    OUT ns float8[], OUT ok boolean, OUT remaining float8, OUT reset_after float8,
    OUT retry_after float8, OUT delay float8)
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $rk$
DECLARE
    r record;
    probe record;
    room record;
BEGIN
    IF mode = 1 OR mode = 2 THEN
        IF mode = 1 THEN
            ns := {f_charge}(algo, st, now, cost, amount, per, cap);
        ELSE
            ns := {f_refund}(algo, st, now, cost, amount, per, cap, at);
        END IF;
        r := {f_apply}(algo, ns, now, 0, amount, per, cap);
    ELSIF keep = 0 THEN
        r := {f_apply}(algo, st, now, cost, amount, per, cap);
        ns := r.ns;
    ELSE
        IF cost <> 0 THEN
            probe := {f_apply}(algo, st, now, cost + keep, amount, per, cap);
            IF NOT probe.ok THEN
                room := {f_apply}(algo, st, now, keep, amount, per, cap);
                ns := st;
                ok := false;
                remaining := CASE WHEN room.ok THEN room.remaining ELSE 0 END;
                reset_after := probe.reset_after;
                retry_after := probe.retry_after;
                delay := 0;
                RETURN;
            END IF;
        END IF;
        r := {f_apply}(algo, st, now, cost, amount, per, cap);
        ns := r.ns;
        room := {f_apply}(algo, ns, now, keep, amount, per, cap);
        ok := r.ok;
        remaining := CASE WHEN room.ok THEN room.remaining ELSE 0 END;
        reset_after := r.reset_after;
        retry_after := r.retry_after;
        delay := r.delay;
        RETURN;
    END IF;
    ok := r.ok;
    remaining := r.remaining;
    reset_after := r.reset_after;
    retry_after := r.retry_after;
    delay := r.delay;
END
$rk$
--;;
-- Several checks all-or-nothing in one transaction (ratekeeper.algorithms.checks.
-- evaluate_checks). Slots are the distinct (key, part) rows, locked in (key, part) order: no
-- deadlocks. Items are the (check, limit) pairs in order, each naming its slot; two items on
-- one slot apply one after the other. Returns 5 floats per item (ok, remaining, reset_after,
-- retry_after, delay), then the time decided at. A denial writes nothing and describes the
-- items that would have passed without this request's cost.
CREATE OR REPLACE FUNCTION {f_checks}(
    s_keys text[], s_parts text[], s_horizons float8[], p_slots int[], p_algos text[],
    p_amounts float8[], p_pers float8[], p_caps float8[], p_costs float8[], p_modes int[],
    p_keeps float8[], p_ats float8[], p_now float8, p_write boolean, p_extra float8,
    p_cleanup int)
RETURNS float8[]
LANGUAGE plpgsql AS $rk$
DECLARE
    now_ float8 := coalesce(p_now, extract(epoch FROM clock_timestamp())::float8);
    nslots int := cardinality(s_keys);
    n int := cardinality(p_slots);
    olds text[] := ARRAY[]::text[];
    works text[];
    holds float8[];
    oks boolean[] := ARRAY[]::boolean[];
    out_ float8[] := ARRAY[]::float8[];
    all_ok boolean := true;
    st float8[];
    r record;
    i int;
    j int;
    locked int;
BEGIN
    IF p_write THEN
        LOOP
            INSERT INTO {state} (key, part, state, expires_at)
            SELECT k, p, NULL, clock_timestamp() FROM unnest(s_keys, s_parts) AS t(k, p)
            ORDER BY k, p
            ON CONFLICT DO NOTHING;
            PERFORM 1 FROM {state} AS s
            WHERE (s.key, s.part) IN (SELECT k, p FROM unnest(s_keys, s_parts) AS t(k, p))
            ORDER BY s.key, s.part FOR UPDATE;
            GET DIAGNOSTICS locked = ROW_COUNT;
            EXIT WHEN locked = nslots;
        END LOOP;
    END IF;
    FOR j IN 1 .. nslots LOOP
        st := NULL;
        SELECT CASE WHEN s.expires_at > clock_timestamp() THEN s.state END INTO st
        FROM {state} AS s WHERE s.key = s_keys[j] AND s.part = s_parts[j];
        olds := olds || st::text;
    END LOOP;
    works := olds;
    holds := array_fill(0::float8, ARRAY[nslots]);
    FOR i IN 1 .. n LOOP
        r := {f_step}(p_algos[i], works[p_slots[i]]::float8[], now_, p_costs[i], p_amounts[i],
                      p_pers[i], p_caps[i], p_modes[i], p_keeps[i], p_ats[i]);
        IF r.ok THEN
            works[p_slots[i]] := r.ns::text;
            holds[p_slots[i]] := r.reset_after;  -- a state in debt is kept until it is repaid
        ELSE
            all_ok := false;
        END IF;
        oks := oks || r.ok;
        out_ := out_ || ARRAY[CASE WHEN r.ok THEN 1 ELSE 0 END, r.remaining, r.reset_after,
                              r.retry_after, r.delay]::float8[];
    END LOOP;
    IF all_ok AND p_write THEN
        FOR j IN 1 .. nslots LOOP
            IF works[j] IS DISTINCT FROM olds[j] THEN
                IF works[j] IS NULL THEN
                    DELETE FROM {state} WHERE key = s_keys[j] AND part = s_parts[j];
                ELSE
                    UPDATE {state} SET state = works[j]::float8[],
                        expires_at = clock_timestamp()
                            + make_interval(secs => greatest(s_horizons[j], holds[j]) + p_extra)
                    WHERE key = s_keys[j] AND part = s_parts[j];
                END IF;
            END IF;
        END LOOP;
    ELSIF NOT all_ok THEN
        FOR i IN 1 .. n LOOP
            IF oks[i] THEN
                r := {f_step}(p_algos[i], olds[p_slots[i]]::float8[], now_, 0, p_amounts[i],
                              p_pers[i], p_caps[i], 0, p_keeps[i], 0);
                out_[5 * i - 4] := CASE WHEN r.ok THEN 1 ELSE 0 END;
                out_[5 * i - 3] := r.remaining;
                out_[5 * i - 2] := r.reset_after;
                out_[5 * i - 1] := r.retry_after;
                out_[5 * i] := r.delay;
            END IF;
        END LOOP;
    END IF;
    IF p_cleanup > 0 THEN
        PERFORM {f_cleanup}(p_cleanup);
    END IF;
    RETURN out_ || now_;
END
$rk$
