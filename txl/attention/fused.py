"""A fused Transformer-XL attention kernel in Triton, forward and backward.

    out = softmax(((q+u) k^T + rel((q+v) R^T)) * scale + mask) v

over keys [memory; segment], block by block with an online softmax: the (queries x keys)
scores, probabilities and position terms are never written to memory. For a block of
BM queries and a block of BN keys the distances d = mlen + i - j form a band of
BM + BN - 1 values, so the position term of the pair is one small product of the query
block with that band of projected position embeddings, followed by a diagonal shift
(`tl.gather`): its cost is that of a (BM x (BM+BN)) product, not of the whole matrix.
Key blocks wholly outside a layer's reach (beyond its attention range, or in the future)
are never visited, so the cost falls with the range.

The kernel takes qu = q + u and qv = q + v (formed outside, so autograd turns their
gradients into those of q, u and v) and the projected embeddings in distance order,
rd[h, d] = W_r R_d (clamp_len already applied). Its backward gives dqu, dqv, dk, dv and
drd; the position gradient sums over queries and batch with atomic adds into a float32
buffer. Inputs may be float32, bfloat16 or float16; products accumulate in float32.
Attention dropout is not supported (the caller falls back to another path).

Without a GPU the kernels run in Triton's interpreter (TRITON_INTERPRET=1, CPU tensors),
which is how the tests check them against the plain path.
"""

from __future__ import annotations

import math
import os

import torch

try:  # an optional dependency (pip install 'txl[gpu]'); txl runs without it
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - exercised where triton is missing
    triton = None


def available(device: torch.device | None = None) -> bool:
    """Triton is importable and can run here: on a CUDA device, or anywhere under its interpreter."""
    if triton is None or not hasattr(tl, "gather"):  # tl.gather arrived in triton 3.3
        return False
    if os.environ.get("TRITON_INTERPRET") == "1":
        return True
    return device is not None and device.type == "cuda"


def _blocks(qlen: int, klen: int, d_head: int) -> tuple[int, int, int]:
    """(BM, BN, BD): query and key block sizes and the head dimension padded to a power of two (tl.dot needs >= 16)."""
    bd = max(16, triton.next_power_of_2(d_head))
    bm = 64 if qlen >= 64 and bd <= 64 else (32 if qlen > 16 else 16)
    return bm, bm, bd  # equal blocks keep the band (BM + BN) a power of two


if triton is not None:

    @triton.jit
    def _band_scores(qu, qv, k_ptrs, rd_base, stride_rd, offs_d, d0, j0, K, D, MLEN, offs_m_local,
                     BM: tl.constexpr, BN: tl.constexpr, BW: tl.constexpr, PREC: tl.constexpr):
        """Unscaled scores of one (query block, key block): content (qu . k) plus the shifted position band."""
        offs_n = j0 + tl.arange(0, BN)
        k = tl.load(k_ptrs, mask=(offs_n[:, None] < K) & (offs_d[None, :] < D), other=0.0)
        # band row t holds distance dmin + t, dmin = mlen + i0 - j0 - (BN - 1): every distance of the pair
        t = tl.arange(0, BW)
        dist = d0 + t
        r = tl.load(rd_base + dist[:, None] * stride_rd + offs_d[None, :],
                    mask=(dist[:, None] >= 0) & (dist[:, None] < K) & (offs_d[None, :] < D), other=0.0)
        content = tl.dot(qu, tl.trans(k), input_precision=PREC)
        band = tl.dot(qv, tl.trans(r), input_precision=PREC)
        # (ii, jj) has distance dmin + ii - jj + BN - 1: the diagonal shift of the band
        shift = offs_m_local[:, None] - tl.arange(0, BN)[None, :] + (BN - 1)
        return content + tl.gather(band, shift, axis=1), k, r

    @triton.jit
    def _query_block(pid_m, bh, H, Q, D, sq_b, sq_h, sq_m, BM: tl.constexpr, BD: tl.constexpr):
        """Where query block pid_m of (batch, head) bh lies: its rows, offsets into (B, H, Q, D) tensors and mask."""
        b, h = bh // H, bh % H
        i0 = pid_m * BM
        offs_m_local = tl.arange(0, BM)
        offs_m = i0 + offs_m_local
        offs_d = tl.arange(0, BD)
        q_off = b * sq_b + h * sq_h + offs_m[:, None] * sq_m + offs_d[None, :]
        return b, h, i0, offs_m_local, offs_m, offs_d, q_off, (offs_m[:, None] < Q) & (offs_d[None, :] < D)

    @triton.jit
    def _key_blocks(MLEN, i0, LIMIT, K, BM: tl.constexpr, BN: tl.constexpr):
        """The first key block a query of block i0 may see, and the end of its keys: mlen + i - LIMIT <= j <= mlen + i."""
        lo = tl.maximum(MLEN + i0 - LIMIT, 0)
        return (lo // BN) * BN, tl.minimum(MLEN + i0 + BM, K)

    @triton.jit
    def _visible(offs_m, offs_n, MLEN, LIMIT, Q, K):
        """(BM, BN): key j is visible to query i (0 <= mlen + i - j <= LIMIT), both in range."""
        dist = MLEN + offs_m[:, None] - offs_n[None, :]
        return (dist >= 0) & (dist <= LIMIT) & (offs_n[None, :] < K) & (offs_m[:, None] < Q)

    @triton.jit
    def _fwd(QU, QV, Kp, V, RD, O, LSE, VISITS,
             sq_b, sq_h, sq_m, sk_b, sk_h, sk_n, so_b, so_h, so_m, srd_h, srd_d,
             H, Q, K, D, MLEN, LIMIT, scale,
             BM: tl.constexpr, BN: tl.constexpr, BD: tl.constexpr, BW: tl.constexpr, PREC: tl.constexpr):
        pid_m, bh = tl.program_id(0), tl.program_id(1)
        b, h, i0, offs_m_local, offs_m, offs_d, q_off, q_mask = _query_block(pid_m, bh, H, Q, D, sq_b, sq_h, sq_m, BM, BD)
        qu = tl.load(QU + q_off, mask=q_mask, other=0.0)
        qv = tl.load(QV + q_off, mask=q_mask, other=0.0)
        m_i = tl.full([BM], -float("inf"), tl.float32)
        l_i = tl.zeros([BM], tl.float32)
        acc = tl.zeros([BM, BD], tl.float32)
        start, hi = _key_blocks(MLEN, i0, LIMIT, K, BM, BN)
        visits = 0
        for j0 in range(start, hi, BN):
            offs_n = j0 + tl.arange(0, BN)
            k_ptrs = Kp + b * sk_b + h * sk_h + offs_n[:, None] * sk_n + offs_d[None, :]
            s, _, _ = _band_scores(qu, qv, k_ptrs, RD + h * srd_h, srd_d, offs_d, MLEN + i0 - j0 - (BN - 1), j0, K, D, MLEN,
                                   offs_m_local, BM, BN, BW, PREC)
            s = tl.where(_visible(offs_m, offs_n, MLEN, LIMIT, Q, K), s * scale, -float("inf"))
            m_new = tl.maximum(m_i, tl.max(s, axis=1))
            m_safe = tl.where(m_new == -float("inf"), 0.0, m_new)  # a row that has seen no key yet
            p = tl.exp(s - m_safe[:, None])
            alpha = tl.exp(m_i - m_safe)
            l_i = l_i * alpha + tl.sum(p, axis=1)
            v = tl.load(V + b * sk_b + h * sk_h + offs_n[:, None] * sk_n + offs_d[None, :],
                        mask=(offs_n[:, None] < K) & (offs_d[None, :] < D), other=0.0)
            acc = tl.dot(p.to(v.dtype), v, acc * alpha[:, None], input_precision=PREC)
            m_i = m_new
            visits += 1
        out = acc / tl.where(l_i == 0.0, 1.0, l_i)[:, None]  # rows past the segment end see nothing
        tl.store(O + b * so_b + h * so_h + offs_m[:, None] * so_m + offs_d[None, :], out.to(O.dtype.element_ty), mask=q_mask)
        tl.store(LSE + bh * Q + offs_m, m_i + tl.log(tl.where(l_i == 0.0, 1.0, l_i)), mask=offs_m < Q)
        tl.store(VISITS + bh * tl.num_programs(0) + pid_m, visits)

    @triton.jit
    def _bwd_dq(QU, QV, Kp, V, RD, DO, LSE, DELTA, DQU, DQV, DRD,
                sq_b, sq_h, sq_m, sk_b, sk_h, sk_n, srd_h, srd_d,
                H, Q, K, D, MLEN, LIMIT, scale,
                BM: tl.constexpr, BN: tl.constexpr, BD: tl.constexpr, BW: tl.constexpr, PREC: tl.constexpr):
        """Per query block: dqu, dqv, and the position gradient of every band it meets (atomically added)."""
        pid_m, bh = tl.program_id(0), tl.program_id(1)
        b, h, i0, offs_m_local, offs_m, offs_d, q_off, q_mask = _query_block(pid_m, bh, H, Q, D, sq_b, sq_h, sq_m, BM, BD)
        qu = tl.load(QU + q_off, mask=q_mask, other=0.0)
        qv = tl.load(QV + q_off, mask=q_mask, other=0.0)
        do = tl.load(DO + q_off, mask=q_mask, other=0.0)
        lse = tl.load(LSE + bh * Q + offs_m, mask=offs_m < Q, other=0.0)
        delta = tl.load(DELTA + bh * Q + offs_m, mask=offs_m < Q, other=0.0)
        dqu = tl.zeros([BM, BD], tl.float32)
        dqv = tl.zeros([BM, BD], tl.float32)
        start, hi = _key_blocks(MLEN, i0, LIMIT, K, BM, BN)
        t = tl.arange(0, BW)
        # band column t of row ii comes from key jj = ii + BN - 1 - t of the pair (when 0 <= jj < BN)
        jj = offs_m_local[:, None] + (BN - 1) - t[None, :]
        in_pair = (jj >= 0) & (jj < BN)
        jj = tl.minimum(tl.maximum(jj, 0), BN - 1)
        for j0 in range(start, hi, BN):
            offs_n = j0 + tl.arange(0, BN)
            k_ptrs = Kp + b * sk_b + h * sk_h + offs_n[:, None] * sk_n + offs_d[None, :]
            d0 = MLEN + i0 - j0 - (BN - 1)
            s, k, r = _band_scores(qu, qv, k_ptrs, RD + h * srd_h, srd_d, offs_d, d0, j0, K, D, MLEN,
                                   offs_m_local, BM, BN, BW, PREC)
            p = tl.where(_visible(offs_m, offs_n, MLEN, LIMIT, Q, K), tl.exp(s * scale - lse[:, None]), 0.0)
            v = tl.load(V + b * sk_b + h * sk_h + offs_n[:, None] * sk_n + offs_d[None, :],
                        mask=(offs_n[:, None] < K) & (offs_d[None, :] < D), other=0.0)
            dp = tl.dot(do, tl.trans(v), input_precision=PREC)
            ds = p * (dp - delta[:, None]) * scale
            band = tl.where(in_pair, tl.gather(ds, jj, axis=1), 0.0)  # (BM, BW): ds by distance
            dqu = tl.dot(ds.to(k.dtype), k, dqu, input_precision=PREC)
            dqv = tl.dot(band.to(r.dtype), r, dqv, input_precision=PREC)
            drd = tl.dot(tl.trans(band.to(qv.dtype)), qv, input_precision=PREC)
            dist_t = d0 + t
            tl.atomic_add(DRD + h * srd_h + dist_t[:, None] * srd_d + offs_d[None, :], drd,
                          mask=(dist_t[:, None] >= 0) & (dist_t[:, None] < K) & (offs_d[None, :] < D), sem="relaxed")
        tl.store(DQU + q_off, dqu.to(DQU.dtype.element_ty), mask=q_mask)
        tl.store(DQV + q_off, dqv.to(DQV.dtype.element_ty), mask=q_mask)

    @triton.jit
    def _bwd_dkdv(QU, QV, Kp, V, RD, DO, LSE, DELTA, DK, DV,
                  sq_b, sq_h, sq_m, sk_b, sk_h, sk_n, srd_h, srd_d,
                  H, Q, K, D, MLEN, LIMIT, scale,
                  BM: tl.constexpr, BN: tl.constexpr, BD: tl.constexpr, BW: tl.constexpr, PREC: tl.constexpr):
        """Per key block: dk and dv, over the query blocks that see it."""
        pid_n, bh = tl.program_id(0), tl.program_id(1)
        b, h = bh // H, bh % H
        j0 = pid_n * BN
        offs_n = j0 + tl.arange(0, BN)
        offs_d = tl.arange(0, BD)
        kv_off = b * sk_b + h * sk_h + offs_n[:, None] * sk_n + offs_d[None, :]
        kv_mask = (offs_n[:, None] < K) & (offs_d[None, :] < D)
        v = tl.load(V + kv_off, mask=kv_mask, other=0.0)
        dk = tl.zeros([BN, BD], tl.float32)
        dv = tl.zeros([BN, BD], tl.float32)
        # queries that may see a key of this block: j - mlen <= i <= j + LIMIT - mlen
        lo = tl.maximum(j0 - MLEN, 0)
        hi = tl.minimum(j0 + BN - 1 + LIMIT - MLEN + 1, Q)
        start = (lo // BM) * BM
        offs_m_local = tl.arange(0, BM)
        for i0 in range(start, hi, BM):
            offs_m = i0 + offs_m_local
            q_off = b * sq_b + h * sq_h + offs_m[:, None] * sq_m + offs_d[None, :]
            q_mask = (offs_m[:, None] < Q) & (offs_d[None, :] < D)
            qu = tl.load(QU + q_off, mask=q_mask, other=0.0)
            qv = tl.load(QV + q_off, mask=q_mask, other=0.0)
            do = tl.load(DO + q_off, mask=q_mask, other=0.0)
            lse = tl.load(LSE + bh * Q + offs_m, mask=offs_m < Q, other=0.0)
            delta = tl.load(DELTA + bh * Q + offs_m, mask=offs_m < Q, other=0.0)
            s, k, _ = _band_scores(qu, qv, Kp + kv_off, RD + h * srd_h, srd_d, offs_d, MLEN + i0 - j0 - (BN - 1), j0, K, D,
                                   MLEN, offs_m_local, BM, BN, BW, PREC)
            p = tl.where(_visible(offs_m, offs_n, MLEN, LIMIT, Q, K), tl.exp(s * scale - lse[:, None]), 0.0)
            dv = tl.dot(tl.trans(p.to(do.dtype)), do, dv, input_precision=PREC)
            dp = tl.dot(do, tl.trans(v), input_precision=PREC)
            ds = p * (dp - delta[:, None]) * scale
            dk = tl.dot(tl.trans(ds.to(qu.dtype)), qu, dk, input_precision=PREC)
        tl.store(DK + kv_off, dk.to(DK.dtype.element_ty), mask=kv_mask)
        tl.store(DV + kv_off, dv.to(DV.dtype.element_ty), mask=kv_mask)


def _precision(t: torch.Tensor) -> str:
    """tl.dot's input precision: float32 inputs as torch would multiply them (tf32 only where torch allows it)."""
    if t.dtype != torch.float32:
        return "ieee"  # bf16/fp16 operands: the precision flag does not apply
    return "tf32" if t.is_cuda and torch.backends.cuda.matmul.allow_tf32 else "ieee"


def _warps(block: int) -> int:
    return 8 if block >= 64 else 4


def _limit(limit: float, klen: int) -> int:
    return klen if limit == math.inf else int(limit)


class _Fused(torch.autograd.Function):
    @staticmethod
    def forward(ctx, qu, qv, k, v, rd, limit: float, scale: float, visits_out):
        B, H, Q, D = qu.shape
        K = k.size(2)
        # one dtype for every product's operands (under autocast q + u is float32 while k and v are bf16)
        qu, qv, k, v, rd = (t.to(k.dtype).contiguous() for t in (qu, qv, k, v, rd))
        bm, bn, bd = _blocks(Q, K, D)
        o = torch.empty_like(qu)
        lse = torch.empty(B * H, Q, device=qu.device, dtype=torch.float32)
        grid = (triton.cdiv(Q, bm), B * H)
        visits = torch.zeros(B * H, grid[0], device=qu.device, dtype=torch.int32)
        prec = _precision(qu)
        lim = _limit(limit, K)
        _fwd[grid](qu, qv, k, v, rd, o, lse, visits, *qu.stride()[:3], *k.stride()[:3], *o.stride()[:3], *rd.stride()[:2],
                   H, Q, K, D, K - Q, lim, scale, BM=bm, BN=bn, BD=bd, BW=bm + bn, PREC=prec, num_warps=_warps(bm))
        if visits_out is not None:
            visits_out.append(visits)
        ctx.save_for_backward(qu, qv, k, v, rd, o, lse)
        ctx.lim, ctx.scale, ctx.blocks, ctx.prec = lim, scale, (bm, bn, bd), prec
        return o

    @staticmethod
    def backward(ctx, do):
        qu, qv, k, v, rd, o, lse = ctx.saved_tensors
        B, H, Q, D = qu.shape
        K = k.size(2)
        bm, bn, bd = ctx.blocks
        do = do.contiguous()
        delta = (do.float() * o.float()).sum(-1).reshape(B * H, Q)
        dqu, dqv = torch.empty_like(qu), torch.empty_like(qv)
        dk, dv = torch.empty_like(k), torch.empty_like(v)
        drd = torch.zeros(rd.shape, device=rd.device, dtype=torch.float32)
        common = (*qu.stride()[:3], *k.stride()[:3], *rd.stride()[:2], H, Q, K, D, K - Q, ctx.lim, ctx.scale)
        meta = dict(BM=bm, BN=bn, BD=bd, BW=bm + bn, PREC=ctx.prec, num_warps=_warps(bm), num_stages=2)
        _bwd_dq[(triton.cdiv(Q, bm), B * H)](qu, qv, k, v, rd, do, lse, delta, dqu, dqv, drd, *common, **meta)
        _bwd_dkdv[(triton.cdiv(K, bn), B * H)](qu, qv, k, v, rd, do, lse, delta, dk, dv, *common, **meta)
        return dqu, dqv, dk, dv, drd.to(rd.dtype), None, None, None


def fused_attention(qu: torch.Tensor, qv: torch.Tensor, k: torch.Tensor, v: torch.Tensor, rd: torch.Tensor,
                    limit: float, scale: float, visits: list | None = None) -> torch.Tensor:
    """(B, H, Q, D) qu = q + u and qv = q + v; (B, H, K, D) keys and values over [memory; segment]; (H, K, D)
    projected position embeddings by distance 0 .. K-1. Returns (B, H, Q, D). Keys at distance above `limit`
    are not seen. `visits`, when a list, receives the (B*H, query blocks) count of key blocks visited."""
    if triton is None:
        raise RuntimeError("the fused attention kernel needs triton (pip install 'txl[gpu]')")
    return _Fused.apply(qu, qv, k, v, rd, limit, scale, visits)
