"""The fused Transformer-XL attention kernels in Triton: forward, dq and dk/dv (see txl.attention.fused for what
they compute and how they are launched; the jit helpers they share come first)."""

from __future__ import annotations

try:  # an optional dependency (pip install 'txl[gpu]'); txl runs without it
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - exercised where triton is missing
    triton = None


if triton is not None:

    @triton.jit
    def _rows(rd_base, stride_rd, d_first, offs_d, K, D, like, BN: tl.constexpr):
        """BN projected position embeddings, distances d_first .. d_first + BN - 1 (zero outside 0 .. K-1), in the
        dtype `like` points to (rd may be float32 beside half queries: its gradient then stays float32)."""
        dist = d_first + tl.arange(0, BN)
        r = tl.load(
            rd_base + dist[:, None] * stride_rd + offs_d[None, :],
            mask=(dist[:, None] >= 0) & (dist[:, None] < K) & (offs_d[None, :] < D),
            other=0.0,
        )
        return r.to(like.dtype.element_ty)

    @triton.jit
    def _diagonal(BM: tl.constexpr, BN: tl.constexpr):
        """(BM, BN) index (ii - x + BN - 1) mod BN, and (BM, BN) ii > x: the band's diagonal shift, both ways.

        Query ii and key jj of a (query block, key block) pair are at distance d0 + BN - 1 + ii - jj, where
        d0 = mlen + i0 - j0 - (BN - 1). The band of distances splits in two halves of BN: `lo` (d0 + c) and
        `hi` (d0 + BN + c). The pair (ii, jj) lies in column c = (ii - jj + BN - 1) mod BN, of `hi` when
        ii > jj and of `lo` otherwise; hi's column c < ii and lo's column c >= ii, and the map between jj
        and c is its own inverse (jj = (ii - c + BN - 1) mod BN), so one index serves forward and backward."""
        ii = tl.arange(0, BM)[:, None]
        x = tl.arange(0, BN)[None, :]
        return (ii - x + BN - 1) & (BN - 1), x < ii

    @triton.jit
    def _band(qv, r, PREC: tl.constexpr):
        """(BM, BN) half a band: each query's position term at BN distances, rounded to the inputs' dtype as a
        matmul under autocast rounds it (so that every kernel recomputes the same scores, in half the registers)."""
        return tl.dot(qv, tl.trans(r), input_precision=PREC).to(qv.dtype)

    @triton.jit
    def _shift(lo, hi, BM: tl.constexpr, BN: tl.constexpr):
        """(BM, BN) float32 position term of each (query, key) of the pair from its band halves by distance."""
        idx, upper = _diagonal(BM, BN)
        return tl.gather(tl.where(upper, hi, lo), idx, axis=1).to(tl.float32)

    @triton.jit
    def _unshift(ds, BM: tl.constexpr, BN: tl.constexpr):
        """The inverse of _shift: (lo, hi), the (BM, BN) score gradient of each query by distance, in band halves."""
        idx, upper = _diagonal(BM, BN)
        g = tl.gather(ds, idx, axis=1)
        return tl.where(upper, 0.0, g), tl.where(upper, g, 0.0)

    @triton.jit
    def _add_position_grad(
        drd_h, srd_d, d_first, offs_d, K, D, g, qv, PREC: tl.constexpr, BN: tl.constexpr, ATOMIC: tl.constexpr
    ):
        """Add (g^T qv) to the position gradient of distances d_first .. d_first + BN - 1: atomically into one
        float32 buffer, or (deterministic) stored into this program's own slice, each distance once per program."""
        dist = d_first + tl.arange(0, BN)
        ptrs = drd_h + dist[:, None] * srd_d + offs_d[None, :]
        mask = (dist[:, None] >= 0) & (dist[:, None] < K) & (offs_d[None, :] < D)
        value = tl.dot(tl.trans(g.to(qv.dtype)), qv, input_precision=PREC)
        if ATOMIC:
            tl.atomic_add(ptrs, value, mask=mask, sem="relaxed")
        else:
            tl.store(ptrs, value, mask=mask)

    @triton.jit
    def _tile(b, h, first, offs_d, N, D, s_b, s_h, s_n, BLOCK: tl.constexpr):
        """Rows first .. first + BLOCK - 1 of (batch b, head h) in a (B, H, N, D) tensor of queries, keys or values:
        the row indices, their offsets (strides s_b, s_h, s_n, then 1), and the mask of what lies inside."""
        offs = first + tl.arange(0, BLOCK)
        at = b * s_b + h * s_h + offs[:, None] * s_n + offs_d[None, :]
        return offs, at, (offs[:, None] < N) & (offs_d[None, :] < D)

    @triton.jit
    def _query_block(pid_m, bh, H, Q, D, sq_b, sq_h, sq_m, BM: tl.constexpr, BD: tl.constexpr):
        """Where query block pid_m of (batch, head) bh lies: its rows, offsets into (B, H, Q, D) tensors and mask."""
        b, h = bh // H, bh % H
        i0 = pid_m * BM
        offs_d = tl.arange(0, BD)
        offs_m, q_off, q_mask = _tile(b, h, i0, offs_d, Q, D, sq_b, sq_h, sq_m, BM)
        return b, h, i0, offs_m, offs_d, q_off, q_mask

    @triton.jit
    def _row_stats(LSE, DELTA, bh, Q, offs_m):
        """Each query's log-sum-exp of its scores (from the forward pass) and delta = rowsum(dO * O)."""
        at, mask = bh * Q + offs_m, offs_m < Q
        return tl.load(LSE + at, mask=mask, other=0.0), tl.load(DELTA + at, mask=mask, other=0.0)

    @triton.jit
    def _scores(qu, k, lo, hi, PREC: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr):
        """(BM, BN) unscaled scores of a (query block, key block) pair: content term plus position term."""
        return tl.dot(qu, tl.trans(k), input_precision=PREC) + _shift(lo, hi, BM, BN)

    @triton.jit
    def _probs(s, lse, visible, scale):
        """The forward pass's probabilities of unscaled scores `s`, recomputed from its log-sum-exp."""
        return tl.where(visible, tl.exp(s * scale - lse[:, None]), 0.0)

    @triton.jit
    def _score_grad(p, do, v, delta, scale, PREC: tl.constexpr):
        """The gradient of the unscaled scores: p * (dO V^T - delta) * scale."""
        return p * (tl.dot(do, tl.trans(v), input_precision=PREC) - delta[:, None]) * scale

    @triton.jit
    def _online_softmax(m_i, l_i, acc, s, v, PREC: tl.constexpr):
        """Fold one key block's scaled, masked scores `s` into the running row max, row sum and output."""
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        m_safe = tl.where(m_new == -float("inf"), 0.0, m_new)  # a row that has seen no key yet
        p = tl.exp(s - m_safe[:, None])
        alpha = tl.exp(m_i - m_safe)
        acc = tl.dot(p.to(v.dtype), v, acc * alpha[:, None], input_precision=PREC)
        return m_new, l_i * alpha + tl.sum(p, axis=1), acc

    @triton.jit
    def _key_blocks(MLEN, i0, LIMIT, K, BM: tl.constexpr, BN: tl.constexpr):
        """The first key block a query of block i0 may see, and the end of its keys:
        mlen + i - LIMIT <= j <= mlen + i."""
        lo = tl.maximum(MLEN + i0 - LIMIT, 0)
        return (lo // BN) * BN, tl.minimum(MLEN + i0 + BM, K)

    @triton.jit
    def _visible(offs_m, offs_n, MLEN, LIMIT, Q, K):
        """(BM, BN): key j is visible to query i (0 <= mlen + i - j <= LIMIT), both in range."""
        dist = MLEN + offs_m[:, None] - offs_n[None, :]
        return (dist >= 0) & (dist <= LIMIT) & (offs_n[None, :] < K) & (offs_m[:, None] < Q)

    @triton.jit
    def _fwd(
        QU,
        QV,
        Kp,
        V,
        RD,
        Op,
        LSE,
        VISITS,
        sq_b,
        sq_h,
        sq_m,
        sk_b,
        sk_h,
        sk_n,
        so_b,
        so_h,
        so_m,
        srd_h,
        srd_d,
        H,
        Q,
        K,
        D,
        MLEN,
        LIMIT,
        scale,
        BM: tl.constexpr,
        BN: tl.constexpr,
        BD: tl.constexpr,
        PREC: tl.constexpr,
    ):
        """Per query block: the output and the log-sum-exp of its scores. Key blocks are visited in order, so the
        lower half of one block's band is the upper half of the next one's: one (BM, BN) band product per block."""
        pid_m, bh = tl.program_id(0), tl.program_id(1)
        b, h, i0, offs_m, offs_d, q_off, q_mask = _query_block(pid_m, bh, H, Q, D, sq_b, sq_h, sq_m, BM, BD)
        qu = tl.load(QU + q_off, mask=q_mask, other=0.0)
        qv = tl.load(QV + q_off, mask=q_mask, other=0.0)
        rd_h = RD + h * srd_h
        m_i = tl.full([BM], -float("inf"), tl.float32)
        l_i = tl.zeros([BM], tl.float32)
        acc = tl.zeros([BM, BD], tl.float32)
        start, end = _key_blocks(MLEN, i0, LIMIT, K, BM, BN)
        hi = _band(qv, _rows(rd_h, srd_d, MLEN + i0 - start + 1, offs_d, K, D, QV, BN), PREC)
        visits = 0
        for j0 in range(start, end, BN):
            offs_n, kv_off, kv_mask = _tile(b, h, j0, offs_d, K, D, sk_b, sk_h, sk_n, BN)
            k = tl.load(Kp + kv_off, mask=kv_mask, other=0.0)
            lo = _band(qv, _rows(rd_h, srd_d, MLEN + i0 - j0 - (BN - 1), offs_d, K, D, QV, BN), PREC)
            s = _scores(qu, k, lo, hi, PREC, BM, BN)
            s = tl.where(_visible(offs_m, offs_n, MLEN, LIMIT, Q, K), s * scale, -float("inf"))
            v = tl.load(V + kv_off, mask=kv_mask, other=0.0)
            m_i, l_i, acc = _online_softmax(m_i, l_i, acc, s, v, PREC)
            hi = lo
            visits += 1
        out = acc / tl.where(l_i == 0.0, 1.0, l_i)[:, None]  # rows past the segment end see nothing
        tl.store(
            Op + b * so_b + h * so_h + offs_m[:, None] * so_m + offs_d[None, :],
            out.to(Op.dtype.element_ty),
            mask=q_mask,
        )
        tl.store(LSE + bh * Q + offs_m, m_i + tl.log(tl.where(l_i == 0.0, 1.0, l_i)), mask=offs_m < Q)
        tl.store(VISITS + bh * tl.num_programs(0) + pid_m, visits)

    @triton.jit
    def _bwd_dq(
        QU,
        QV,
        Kp,
        V,
        RD,
        DO,
        LSE,
        DELTA,
        DQU,
        DQV,
        DRD,
        sdrd_s,
        sq_b,
        sq_h,
        sq_m,
        sk_b,
        sk_h,
        sk_n,
        srd_h,
        srd_d,
        H,
        Q,
        K,
        D,
        MLEN,
        LIMIT,
        scale,
        BM: tl.constexpr,
        BN: tl.constexpr,
        BD: tl.constexpr,
        PREC: tl.constexpr,
        ATOMIC: tl.constexpr,
    ):
        """Per query block: dqu, dqv, and the position gradient of the distances it meets.

        As in the forward pass a band half is shared by neighbouring key blocks, so the gradient of distances
        d .. d + BN - 1 (the upper half of this block's band, the lower half of the previous one's) is summed
        in registers first: one (BN, BD) product for dqv, one for the position gradient, one add. The adds go
        atomically into one buffer, or (ATOMIC false) into the program's own slice (sdrd_s apart), summed after."""
        pid_m, bh = tl.program_id(0), tl.program_id(1)
        b, h, i0, offs_m, offs_d, q_off, q_mask = _query_block(pid_m, bh, H, Q, D, sq_b, sq_h, sq_m, BM, BD)
        qu = tl.load(QU + q_off, mask=q_mask, other=0.0)
        qv = tl.load(QV + q_off, mask=q_mask, other=0.0)
        do = tl.load(DO + q_off, mask=q_mask, other=0.0)
        lse, delta = _row_stats(LSE, DELTA, bh, Q, offs_m)
        rd_h, drd_h = RD + h * srd_h, DRD + h * srd_h
        if not ATOMIC:  # this program's own slice
            drd_h += (pid_m * (tl.num_programs(1) // H) + b).to(tl.int64) * sdrd_s
        dqu = tl.zeros([BM, BD], tl.float32)
        dqv = tl.zeros([BM, BD], tl.float32)
        start, end = _key_blocks(MLEN, i0, LIMIT, K, BM, BN)
        d_hi = MLEN + i0 - start + 1  # the first distance of the upper band half
        r_hi = _rows(rd_h, srd_d, d_hi, offs_d, K, D, QV, BN)
        hi = _band(qv, r_hi, PREC)
        carry = tl.zeros([BM, BN], qv.dtype)  # the previous block's lower-half gradient
        for j0 in range(start, end, BN):
            offs_n, kv_off, kv_mask = _tile(b, h, j0, offs_d, K, D, sk_b, sk_h, sk_n, BN)
            k = tl.load(Kp + kv_off, mask=kv_mask, other=0.0)
            d_lo = MLEN + i0 - j0 - (BN - 1)
            r_lo = _rows(rd_h, srd_d, d_lo, offs_d, K, D, QV, BN)
            lo = _band(qv, r_lo, PREC)
            p = _probs(_scores(qu, k, lo, hi, PREC, BM, BN), lse, _visible(offs_m, offs_n, MLEN, LIMIT, Q, K), scale)
            v = tl.load(V + kv_off, mask=kv_mask, other=0.0)
            ds = _score_grad(p, do, v, delta, scale, PREC)
            dqu = tl.dot(ds.to(k.dtype), k, dqu, input_precision=PREC)
            g_lo, g_hi = _unshift(ds, BM, BN)
            g = g_hi + carry.to(tl.float32)  # every gradient of distances d_hi .. d_hi + BN - 1 from this query block
            dqv = tl.dot(g.to(r_hi.dtype), r_hi, dqv, input_precision=PREC)
            _add_position_grad(drd_h, srd_d, d_hi, offs_d, K, D, g, qv, PREC, BN, ATOMIC)
            carry, r_hi, hi, d_hi = g_lo.to(qv.dtype), r_lo, lo, d_lo
        dqv = tl.dot(carry.to(r_hi.dtype), r_hi, dqv, input_precision=PREC)
        _add_position_grad(drd_h, srd_d, d_hi, offs_d, K, D, carry, qv, PREC, BN, ATOMIC)
        tl.store(DQU + q_off, dqu.to(DQU.dtype.element_ty), mask=q_mask)
        tl.store(DQV + q_off, dqv.to(DQV.dtype.element_ty), mask=q_mask)

    @triton.jit
    def _bwd_dkdv(
        QU,
        QV,
        Kp,
        V,
        RD,
        DO,
        LSE,
        DELTA,
        DK,
        DV,
        sq_b,
        sq_h,
        sq_m,
        sk_b,
        sk_h,
        sk_n,
        srd_h,
        srd_d,
        H,
        Q,
        K,
        D,
        MLEN,
        LIMIT,
        scale,
        BM: tl.constexpr,
        BN: tl.constexpr,
        BD: tl.constexpr,
        PREC: tl.constexpr,
    ):
        """Per key block: dk and dv, over the query blocks that see it. Query blocks are visited in order, so the
        upper band half's embeddings of one are the lower half's of the next: one (BN, BD) load per block."""
        pid_n, bh = tl.program_id(0), tl.program_id(1)
        b, h = bh // H, bh % H
        j0 = pid_n * BN
        offs_d = tl.arange(0, BD)
        offs_n, kv_off, kv_mask = _tile(b, h, j0, offs_d, K, D, sk_b, sk_h, sk_n, BN)
        k = tl.load(Kp + kv_off, mask=kv_mask, other=0.0)
        v = tl.load(V + kv_off, mask=kv_mask, other=0.0)
        rd_h = RD + h * srd_h
        dk = tl.zeros([BN, BD], tl.float32)
        dv = tl.zeros([BN, BD], tl.float32)
        # queries that may see a key of this block: j - mlen <= i <= j + LIMIT - mlen
        first = tl.maximum(j0 - MLEN, 0)
        end = tl.minimum(j0 + BN - 1 + LIMIT - MLEN + 1, Q)
        start = (first // BM) * BM
        r_lo = _rows(rd_h, srd_d, MLEN + start - j0 - (BN - 1), offs_d, K, D, QV, BN)
        for i0 in range(start, end, BM):
            offs_m, q_off, q_mask = _tile(b, h, i0, offs_d, Q, D, sq_b, sq_h, sq_m, BM)
            qu = tl.load(QU + q_off, mask=q_mask, other=0.0)
            qv = tl.load(QV + q_off, mask=q_mask, other=0.0)
            do = tl.load(DO + q_off, mask=q_mask, other=0.0)
            lse, delta = _row_stats(LSE, DELTA, bh, Q, offs_m)
            r_hi = _rows(rd_h, srd_d, MLEN + i0 - j0 + 1, offs_d, K, D, QV, BN)
            s = _scores(qu, k, _band(qv, r_lo, PREC), _band(qv, r_hi, PREC), PREC, BM, BN)
            p = _probs(s, lse, _visible(offs_m, offs_n, MLEN, LIMIT, Q, K), scale)
            dv = tl.dot(tl.trans(p.to(do.dtype)), do, dv, input_precision=PREC)
            ds = _score_grad(p, do, v, delta, scale, PREC)
            dk = tl.dot(tl.trans(ds.to(qu.dtype)), qu, dk, input_precision=PREC)
            r_lo = r_hi
        tl.store(DK + kv_off, dk.to(DK.dtype.element_ty), mask=kv_mask)
        tl.store(DV + kv_off, dv.to(DV.dtype.element_ty), mask=kv_mask)
