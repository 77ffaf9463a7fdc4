// The compiled WaveNet chunk step: every layer, the output head and the sampling for a batch of streams, for a
// whole chunk of steps, in one call. Included by one small .cpp per instruction-set variant (engine_generic.cpp,
// engine_avx2.cpp, engine_avx512.cpp); each is its own Python extension module, so code built for AVX2 or AVX-512 is
// only ever loaded on a CPU that has it (models/generate/compiled.py checks first).
//
// Exactness: a stream's arithmetic never depends on the other streams of the batch. Each output value is one
// accumulation chain over k in a fixed order whatever the number of rows blocked together or the thread that runs
// them, and the sampling is per row in float64 exactly as models/generate/reference.py's sample() and uniforms().

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#ifndef ENGINE_MODULE
#error "define ENGINE_MODULE"
#endif
#define ENGINE_STR2(x) #x
#define ENGINE_STR(x) ENGINE_STR2(x)

namespace py = pybind11;

#include "kernels.h"

namespace {

// ---- the engine ---------------------------------------------------------------------------------------------------

struct Dims {
    int layers, r, g, s, classes;
    int rp, gp, sp, cp;
    int width;  // layers * 2G: one step's gate biases
};

struct Row {  // one stream of the chunk
    int64_t index, slot, t, last, count;
    uint64_t seed;
    double temperature;
    const float* frames;  // features streams: per-frame gate biases (frames, width), frame 0 = frame_offset
    int64_t frame_offset;
    const double* pitch;  // pitch-lag streams: pitch rows (frames, 3) held F0, periodicity, phase; as frames
    double* ring;  // pitch-lag streams: the companded inputs, sample s at s mod the ring's size
};

struct ChunkArgs {
    std::vector<float*> queues;
    std::vector<int64_t> dilation;
    const float* bias;  // (B, n, width), strides below in floats (0 over steps: the same biases every step)
    int64_t bias_row, bias_step;
    int64_t n;
    int64_t* out;  // (B, n)
    float* logits;  // (B, n, classes) or null
    int64_t hop;  // samples per frame, for rows with frames
    int lag_taps = 0;  // pitch-lag taps (0: none), their weights (taps, width), the sample rate, the ring's mask
    const float* lag_weight = nullptr;
    double sample_rate = 0.0;
    int64_t ring_mask = 0;
};

inline double companded(int64_t cls, int classes) {  // models/pitch.py companded()
    return 2.0 * static_cast<double>(cls) / static_cast<double>(classes - 1) - 1.0;
}

// What the pitch-lag taps add to the per-stream constant at position p (models/pitch.py lag_taps() and
// Generator._added_bias, to float rounding): out = constant + sum_j tap_j * weight_j, where tap j is the
// periodicity times the input one pitch period back, offset by j, linearly interpolated. The ring holds the inputs
// up to sample p - 1; the taps read at least lag_reach's nearest samples back.
inline void lag_bias(float* __restrict out, const float* __restrict constant, const Row& row, int64_t p, const ChunkArgs& a, int width) {
    const int64_t origin = row.frame_offset * a.hop, rel = p - origin, f = rel / a.hop;
    const double k = static_cast<double>(rel % a.hop) / static_cast<double>(a.hop);
    const double* left = row.pitch + f * 3;
    const double* right = left + 3;
    const double f0 = left[0] + (right[0] - left[0]) * k;
    const double amplitude = left[1] + (right[1] - left[1]) * k;
    const double lag = a.sample_rate / f0;
    float taps[8];
    for (int i = 0; i < a.lag_taps; ++i) {
        const double at = (static_cast<double>(rel) - lag) + static_cast<double>(i - a.lag_taps / 2);
        const double lo = std::floor(at), frac = at - lo;
        const int64_t s = static_cast<int64_t>(lo) + origin;
        const double y0 = row.ring[s & a.ring_mask], y1 = row.ring[(s + 1) & a.ring_mask];
        taps[i] = static_cast<float>(amplitude * (y0 * (1.0 - frac) + y1 * frac));
    }
    const float t0 = taps[0];
    for (int j = 0; j < width; ++j) out[j] = t0 * a.lag_weight[j];
    for (int i = 1; i < a.lag_taps; ++i) {
        const float ti = taps[i];
        const float* w = a.lag_weight + static_cast<size_t>(i) * width;
        for (int j = 0; j < width; ++j) out[j] = out[j] + ti * w[j];
    }
    for (int j = 0; j < width; ++j) out[j] = constant[j] + out[j];
}

inline int64_t ring(int64_t t, int64_t dilation) {  // t mod dilation, without a division for powers of two
    return (dilation & (dilation - 1)) == 0 ? t & (dilation - 1) : t % dilation;
}

inline const float* bias_at(const ChunkArgs& a, int64_t row, int64_t step) {
    return a.bias + row * a.bias_row + step * a.bias_step;
}

class Engine {
   public:
    Engine(py::dict cfg, py::list weights, const std::string& precision) {
        if (precision != "fp32" && precision != "bf16") throw std::invalid_argument("precision: fp32 or bf16");
        bf16_ = precision == "bf16";
        d_.r = cfg["residual"].cast<int>();
        d_.g = cfg["gate"].cast<int>();
        d_.s = cfg["skip"].cast<int>();
        d_.classes = cfg["classes"].cast<int>();
        dilations_ = cfg["dilations"].cast<std::vector<int64_t>>();
        d_.layers = static_cast<int>(dilations_.size());
        d_.rp = round_up(d_.r, kLanes);
        d_.gp = round_up(d_.g, kLanes);
        d_.sp = round_up(d_.s, kLanes);
        d_.cp = round_up(d_.classes, kLanes);
        d_.width = d_.layers * 2 * d_.g;
        if (cfg.contains("pitch_lag")) {  // the pitch-lag taps' weights (taps, width) and the sample rate
            lag_taps_ = cfg["pitch_lag"].cast<int>();
            if (lag_taps_ < 1 || lag_taps_ > 7 || lag_taps_ % 2 == 0)
                throw std::invalid_argument("pitch_lag: an odd number of taps, at most 7");
            auto w = cfg["lag_weight"].cast<py::array_t<float, py::array::c_style | py::array::forcecast>>();
            if (w.ndim() != 2 || w.shape(0) != lag_taps_ || w.shape(1) != d_.width)
                throw std::invalid_argument("lag_weight: (pitch_lag, width)");
            lag_weight_.assign(w.data(), w.data() + w.size());
            sample_rate_ = cfg["sample_rate"].cast<double>();
            if (!(sample_rate_ > 0)) throw std::invalid_argument("sample_rate: > 0");
            lag_history_ = cfg["lag_history"].cast<int64_t>();  // inputs kept per stream: reaches the farthest tap
            if (lag_history_ < 1) throw std::invalid_argument("lag_history: >= 1");
            ring_size_ = 1;
            while (ring_size_ < lag_history_ + 1) ring_size_ *= 2;  // the history and the chunk's current input
        }
        const int L = d_.layers, R = d_.r, G = d_.g, S = d_.s, C = d_.classes;
        // weights: embed, then per layer past, current, gate_bias, out, out_bias, then head1, head1_bias, head2,
        // head2_bias (as StepWeights), all float32 C-contiguous
        if (static_cast<int>(weights.size()) != 5 + 5 * L) throw std::invalid_argument("weights: wrong count");
        auto arr = [&](int i, std::vector<py::ssize_t> shape) {
            auto a = weights[i].cast<py::array_t<float, py::array::c_style | py::array::forcecast>>();
            if (a.ndim() != static_cast<py::ssize_t>(shape.size())) throw std::invalid_argument("weights: bad rank");
            for (size_t j = 0; j < shape.size(); ++j)
                if (a.shape(j) != shape[j]) throw std::invalid_argument("weights: bad shape at " + std::to_string(i));
            return a;
        };
        auto embed = arr(0, {C, R});
        embed_ = aligned_zeros<float>(static_cast<size_t>(C) * R);
        std::memcpy(embed_.get(), embed.data(), sizeof(float) * C * R);
        std::vector<int> gate_rows(2 * G), ident_r(R), shifted_r(R), ident_g(G), out_rows(R + S), ident_s(S),
            ident_c(C);
        for (int j = 0; j < 2 * G; ++j) gate_rows[j] = j < G ? j : d_.gp + j - G;
        for (int j = 0; j < R + S; ++j) out_rows[j] = j < R ? j : d_.rp + j - R;
        for (int j = 0; j < R; ++j) ident_r[j] = j, shifted_r[j] = d_.rp + j;
        for (int j = 0; j < G; ++j) ident_g[j] = j;
        for (int j = 0; j < S; ++j) ident_s[j] = j;
        for (int j = 0; j < C; ++j) ident_c[j] = j;
        gate_.resize(L);
        out_.resize(L);
        for (int l = 0; l < L; ++l) {
            auto past = arr(1 + 5 * l, {2 * G, R});
            auto current = arr(2 + 5 * l, {2 * G, R});
            auto gate_bias = arr(3 + 5 * l, {2 * G});
            auto out = arr(4 + 5 * l, {R + S, G});
            auto out_bias = arr(5 + 5 * l, {R + S});
            std::vector<float> both(static_cast<size_t>(2 * G) * 2 * R);  // [past | current]
            std::vector<int> both_cols(2 * R);
            for (int m = 0; m < 2 * G; ++m)
                for (int c = 0; c < R; ++c) {
                    both[static_cast<size_t>(m) * 2 * R + c] = past.data()[m * R + c];
                    both[static_cast<size_t>(m) * 2 * R + R + c] = current.data()[m * R + c];
                }
            for (int c = 0; c < R; ++c) both_cols[c] = c, both_cols[R + c] = d_.rp + c;
            pack(gate_[l], 2 * d_.gp, 2 * d_.rp, both.data(), 2 * G, 2 * R, gate_rows, both_cols, gate_bias.data(),
                 bf16_, kNativeBf16);
            pack(out_[l], d_.rp + d_.sp, round_up(d_.gp, 2), out.data(), R + S, G, out_rows, ident_g,
                 out_bias.data(), bf16_, kNativeBf16);
        }
        int h = 1 + 5 * L;
        auto head1 = arr(h, {S, S});
        auto head1_bias = arr(h + 1, {S});
        auto head2 = arr(h + 2, {C, S});
        auto head2_bias = arr(h + 3, {C});
        pack(head1_, d_.sp, d_.sp, head1.data(), S, S, ident_s, ident_s, head1_bias.data(), bf16_, kNativeBf16);
        pack(head2_, d_.cp, d_.sp, head2.data(), C, S, ident_c, ident_s, head2_bias.data(), bf16_, kNativeBf16);
    }

    // Run a chunk; see models/generate/compiled.py for the argument contract. Returns classes (B, n).
    py::array_t<int64_t> run(py::list queues, py::array_t<int64_t, py::array::c_style> slots,
                             py::array_t<int64_t, py::array::c_style> t, py::array_t<int64_t, py::array::c_style> last,
                             py::array_t<int64_t, py::array::c_style> counts, py::array bias,
                             py::array_t<uint64_t, py::array::c_style> seeds,
                             py::array_t<double, py::array::c_style> temperatures, int threads, py::object logits,
                             py::object frames, py::object frame_offsets, int64_t hop, py::object lag) {
        const int L = d_.layers;
        if (static_cast<int>(queues.size()) != L) throw std::invalid_argument("queues: one per layer");
        if (bias.ndim() != 3 || !py::isinstance<py::array_t<float>>(bias) || bias.shape(2) != d_.width ||
            bias.strides(2) != sizeof(float) || bias.strides(0) < 0 || bias.strides(1) < 0 ||
            bias.strides(0) % sizeof(float) || bias.strides(1) % sizeof(float))
            throw std::invalid_argument("bias: float32 (B, n, width), width contiguous, other strides >= 0");
        const int64_t B = bias.shape(0), n = bias.shape(1);
        for (auto* a : {&slots, &t, &last, &counts})
            if (a->ndim() != 1 || a->shape(0) != B) throw std::invalid_argument("per-stream arrays: shape (B,)");
        if (seeds.ndim() != 1 || seeds.shape(0) != B || temperatures.ndim() != 1 || temperatures.shape(0) != B)
            throw std::invalid_argument("seeds, temperatures: shape (B,)");
        ChunkArgs args;
        args.n = n;
        args.bias = static_cast<const float*>(bias.data());
        args.bias_row = bias.strides(0) / static_cast<int64_t>(sizeof(float));
        args.bias_step = bias.strides(1) / static_cast<int64_t>(sizeof(float));
        args.dilation = dilations_;
        int64_t capacity = -1;
        for (int l = 0; l < L; ++l) {
            if (!py::isinstance<py::array_t<float>>(queues[l]))
                throw std::invalid_argument("queues: float32 arrays");
            auto q = py::reinterpret_borrow<py::array>(queues[l]);
            if (!(q.flags() & py::array::c_style) || !q.writeable() || q.ndim() != 3 ||
                q.shape(1) != dilations_[l] || q.shape(2) != d_.r)
                throw std::invalid_argument("queues: writeable float32 C-contiguous (capacity, dilation, R)");
            if (capacity < 0) capacity = q.shape(0);
            if (q.shape(0) != capacity) throw std::invalid_argument("queues: one capacity");
            args.queues.push_back(static_cast<float*>(q.mutable_data()));
        }
        py::array_t<int64_t> out({B, n});
        std::memset(out.mutable_data(), 0, sizeof(int64_t) * B * n);
        args.out = out.mutable_data();
        args.logits = nullptr;
        py::array_t<float> logits_arr;
        if (!logits.is_none()) {
            if (!py::isinstance<py::array_t<float>>(logits)) throw std::invalid_argument("logits: float32 array");
            logits_arr = py::reinterpret_borrow<py::array_t<float>>(logits);
            if (!(logits_arr.flags() & py::array::c_style) || !logits_arr.writeable() || logits_arr.ndim() != 3 ||
                logits_arr.shape(0) != B || logits_arr.shape(1) != n || logits_arr.shape(2) != d_.classes)
                throw std::invalid_argument("logits: writeable float32 C-contiguous (B, n, classes)");
            args.logits = logits_arr.mutable_data();
        }
        // Rows with per-frame biases: their gate biases are interpolated here, per step, and bias holds only the
        // per-stream constant added after (Generator._sample_bias's order of operations).
        std::vector<const float*> frame_ptr(B, nullptr);
        std::vector<int64_t> frame_off(B, 0);
        args.hop = hop;
        if (!frames.is_none()) {
            auto list = frames.cast<py::list>();
            auto offsets = frame_offsets.cast<py::array_t<int64_t, py::array::c_style | py::array::forcecast>>();
            if (static_cast<int64_t>(list.size()) != B || offsets.ndim() != 1 || offsets.shape(0) != B)
                throw std::invalid_argument("frames: one per stream (or None), frame_offsets (B,)");
            for (int64_t i = 0; i < B; ++i) {
                if (list[i].is_none()) continue;
                if (hop <= 0) throw std::invalid_argument("frames need hop > 0");
                if (!py::isinstance<py::array_t<float>>(list[i])) throw std::invalid_argument("frames: float32");
                auto f = py::reinterpret_borrow<py::array>(list[i]);
                if (!(f.flags() & py::array::c_style) || f.ndim() != 2 || f.shape(1) != d_.width)
                    throw std::invalid_argument("frames: C-contiguous (frames, width)");
                const int64_t first = t.at(i) / hop - offsets.at(i);
                const int64_t last_needed = (t.at(i) + counts.at(i) - 1) / hop - offsets.at(i) + 1;
                if (counts.at(i) > 0 && (first < 0 || last_needed >= f.shape(0)))
                    throw std::invalid_argument("frames do not cover the stream's samples");
                frame_ptr[i] = static_cast<const float*>(f.data());
                frame_off[i] = offsets.at(i);
            }
        }
        // Rows with pitch-lag taps: (pitch rows, history) per stream or None, see models/generate/compiled.py. The engine keeps
        // each stream's inputs in a ring of its own for the chunk, so a chunk may be any length.
        std::vector<const double*> pitch_ptr(B, nullptr);
        std::vector<std::vector<double>> rings(B);
        if (!lag.is_none()) {
            if (lag_taps_ == 0) throw std::invalid_argument("lag: this engine has no pitch-lag taps");
            auto list = lag.cast<py::list>();
            if (static_cast<int64_t>(list.size()) != B) throw std::invalid_argument("lag: one per stream (or None)");
            args.lag_taps = lag_taps_;
            args.lag_weight = lag_weight_.data();
            args.sample_rate = sample_rate_;
            for (int64_t i = 0; i < B; ++i) {
                if (list[i].is_none()) continue;
                if (!frame_ptr[i]) throw std::invalid_argument("lag: only for streams with frames");
                auto pair = list[i].cast<py::tuple>();
                if (pair.size() != 2) throw std::invalid_argument("lag: (pitch rows, history) per stream");
                if (!py::isinstance<py::array_t<double>>(pair[0]) || !py::isinstance<py::array_t<int64_t>>(pair[1]))
                    throw std::invalid_argument("lag: float64 pitch rows, int64 history");
                auto p = py::reinterpret_borrow<py::array>(pair[0]);
                auto h = py::reinterpret_borrow<py::array_t<int64_t>>(pair[1]);
                if (!(p.flags() & py::array::c_style) || p.ndim() != 2 || p.shape(1) != 3)
                    throw std::invalid_argument("lag: pitch rows C-contiguous (frames, 3)");
                const int64_t last_needed = (t.at(i) + counts.at(i) - 1) / hop - frame_off[i] + 1;
                if (counts.at(i) > 0 && last_needed >= p.shape(0))
                    throw std::invalid_argument("lag: pitch rows do not cover the stream's samples");
                if (h.ndim() != 1 || h.shape(0) != lag_history_)
                    throw std::invalid_argument("lag: a history of lag_history inputs per stream");
                const int64_t n_hist = lag_history_, size = ring_size_;
                args.ring_mask = size - 1;
                // history k is the input of position t - n + k: sample t - n - 1 + k; last is sample t - 1
                rings[i].assign(size, 0.0);
                for (int64_t k = 0; k < n_hist; ++k) {
                    const int64_t cls = h.at(k);
                    if (cls < 0 || cls >= d_.classes) throw std::invalid_argument("lag: history holds a non-class");
                    rings[i][(t.at(i) - n_hist - 1 + k) & args.ring_mask] = companded(cls, d_.classes);
                }
                pitch_ptr[i] = static_cast<const double*>(p.data());
            }
        }
        std::vector<Row> rows(B);
        std::vector<char> used(capacity > 0 ? capacity : 0, 0);
        for (int64_t i = 0; i < B; ++i) {
            Row& row = rows[i];
            row = {i, slots.at(i), t.at(i), last.at(i), counts.at(i), seeds.at(i), temperatures.at(i), frame_ptr[i],
                   frame_off[i], pitch_ptr[i], pitch_ptr[i] ? rings[i].data() : nullptr};
            if (row.slot < 0 || row.slot >= capacity || used[row.slot])
                throw std::invalid_argument("slots: bad or repeated");
            used[row.slot] = 1;
            if (row.last < 0 || row.last >= d_.classes) throw std::invalid_argument("last: not a class");
            if (row.count < 0 || row.count > n || row.t < 0) throw std::invalid_argument("counts or t out of range");
        }
        {
            py::gil_scoped_release release;
            run_rows(rows, args, threads);
        }
        return out;
    }

    py::dict info() const {
        py::dict d;
        d["variant"] = kVariant;
        d["precision"] = bf16_ ? "bf16" : "fp32";
        d["native_bf16"] = bf16_ && kNativeBf16;
        size_t bytes = embed_bytes();
        for (int l = 0; l < d_.layers; ++l) bytes += matrix_bytes(gate_[l]) + matrix_bytes(out_[l]);
        bytes += matrix_bytes(head1_) + matrix_bytes(head2_);
        d["weight_bytes"] = bytes;
        return d;
    }

   private:
    size_t embed_bytes() const { return sizeof(float) * d_.classes * d_.r; }
    static size_t matrix_bytes(const Matrix& A) {
        return static_cast<size_t>(A.mp) * A.k * (A.bf16 ? 2 : 4) + sizeof(float) * A.mp;
    }

    // Split the streams over threads (each its own rows for the whole chunk: no synchronisation), balancing steps.
    void run_rows(std::vector<Row>& rows, const ChunkArgs& args, int threads) const {
        std::sort(rows.begin(), rows.end(), [](const Row& a, const Row& b) {
            return a.count != b.count ? a.count > b.count : a.index < b.index;
        });
        const int nt = std::max(1, std::min<int>(threads, static_cast<int>(rows.size())));
        std::vector<std::vector<Row>> parts(nt);
        std::vector<int64_t> load(nt, 0);
        for (const Row& row : rows) {
            int best = static_cast<int>(std::min_element(load.begin(), load.end()) - load.begin());
            parts[best].push_back(row);
            load[best] += row.count;
        }
        if (nt == 1) {
            run_part(parts[0], args);
            return;
        }
        std::vector<std::thread> pool;
        std::vector<std::exception_ptr> errors(nt);
        for (int i = 1; i < nt; ++i)
            pool.emplace_back([&, i] {
                try {
                    run_part(parts[i], args);
                } catch (...) {
                    errors[i] = std::current_exception();
                }
            });
        try {
            run_part(parts[0], args);
        } catch (...) {
            errors[0] = std::current_exception();
        }
        for (auto& th : pool) th.join();
        for (auto& e : errors)
            if (e) std::rethrow_exception(e);
    }

    // One thread's streams (sorted longest first): every step, the still-active ones in blocks of kMaxRows.
    void run_part(std::vector<Row>& rows, const ChunkArgs& args) const {
        if (rows.empty()) return;
        const Dims& d = d_;
        const int xk = 2 * d.rp;
        const int blk = kMaxRows;
        auto x = aligned_zeros<float>(static_cast<size_t>(blk) * xk);
        auto a = aligned_zeros<float>(static_cast<size_t>(blk) * 2 * d.gp);
        auto z = aligned_zeros<float>(static_cast<size_t>(blk) * round_up(d.gp, 2));
        auto o = aligned_zeros<float>(static_cast<size_t>(blk) * (d.rp + d.sp));
        auto h = aligned_zeros<float>(static_cast<size_t>(blk) * d.rp);
        auto skip = aligned_zeros<float>(static_cast<size_t>(blk) * d.sp);
        auto y1 = aligned_zeros<float>(static_cast<size_t>(blk) * d.sp);
        auto lg = aligned_zeros<float>(static_cast<size_t>(blk) * d.cp);
        auto scratch = aligned_zeros<double>(static_cast<size_t>(blk) * d.cp);
        auto cbuf = aligned_zeros<float>(round_up(2 * d.g, kLanes));
        const size_t lag_stride = round_up(d.width, kLanes);
        auto lagb = aligned_zeros<float>(args.lag_taps ? static_cast<size_t>(blk) * lag_stride : 0);
        const float *xp[kMaxRows], *zp[kMaxRows], *sp_[kMaxRows], *y1c[kMaxRows];
        float *xw[kMaxRows], *aw[kMaxRows], *zw[kMaxRows], *ow[kMaxRows], *y1w[kMaxRows];
        const float* lw[kMaxRows];
        float* lww[kMaxRows];
        for (int r = 0; r < blk; ++r) {
            xw[r] = x.get() + r * xk, xp[r] = xw[r];
            aw[r] = a.get() + r * 2 * d.gp;
            zw[r] = z.get() + r * round_up(d.gp, 2), zp[r] = zw[r];
            ow[r] = o.get() + r * (d.rp + d.sp);
            sp_[r] = skip.get() + r * d.sp;
            y1w[r] = y1.get() + r * d.sp, y1c[r] = y1w[r];
            lww[r] = lg.get() + r * d.cp, lw[r] = lww[r];
        }
        int64_t active = static_cast<int64_t>(rows.size());
        for (int64_t i = 0; i < args.n; ++i) {
            while (active > 0 && rows[active - 1].count <= i) --active;
            if (active == 0) break;
            for (int64_t b0 = 0; b0 < active; b0 += blk) {
                const int nr = static_cast<int>(std::min<int64_t>(blk, active - b0));
                Row* block = rows.data() + b0;
                for (int r = 0; r < nr; ++r) {
                    copy_floats(h.get() + r * d.rp, embed_.get() + block[r].last * d.r, d.r);
                    std::memset(skip.get() + r * d.sp, 0, sizeof(float) * d.sp);
                    if (block[r].pitch) {  // this step's input joins the ring, then the taps read back from it
                        const int64_t p = block[r].t;
                        block[r].ring[(p - 1) & args.ring_mask] = companded(block[r].last, d.classes);
                        lag_bias(lagb.get() + r * lag_stride, bias_at(args, block[r].index, i), block[r], p, args,
                                 d.width);
                    }
                }
                for (int l = 0; l < d.layers; ++l) {
                    const int64_t dil = args.dilation[l];
                    for (int r = 0; r < nr; ++r) {
                        const int64_t t = block[r].t;
                        float* q = args.queues[l] + (block[r].slot * dil + ring(t, dil)) * d.r;
                        float* hr = h.get() + r * d.rp;
                        copy_floats(xw[r], q, d.r);
                        copy_floats(xw[r] + d.rp, hr, d.r);
                        copy_floats(q, hr, d.r);
                        // the next step's entry and gate biases, while the weights stream
                        const float* qn = args.queues[l] + (block[r].slot * dil + ring(t + 1, dil)) * d.r;
                        for (int j = 0; j < d.r; j += 16) __builtin_prefetch(qn + j, 1, 3);
                        if (args.bias_step != 0 && i + 1 < block[r].count) {
                            const float* bn = bias_at(args, block[r].index, i + 1) + l * 2 * d.g;
                            for (int j = 0; j < 2 * d.g; j += 16) __builtin_prefetch(bn + j, 0, 3);
                        }
                    }
                    matvec(gate_[l], nr, xp, aw);
                    for (int r = 0; r < nr; ++r) {
                        const float* cb = (block[r].pitch ? lagb.get() + r * lag_stride
                                                          : bias_at(args, block[r].index, i)) + l * 2 * d.g;
                        if (block[r].frames) {  // interpolate between the frames either side, then the constant
                            const int64_t p = block[r].t, f = p / args.hop - block[r].frame_offset;
                            const float alpha = static_cast<float>(p % args.hop) / static_cast<float>(args.hop);
                            const float* left = block[r].frames + f * d.width + l * 2 * d.g;
                            lerp_row(cbuf.get(), left, left + d.width, alpha, cb, 2 * d.g);
                            cb = cbuf.get();
                        }
                        gate(aw[r], cb, d.g, d.gp, zw[r]);
                    }
                    matvec(out_[l], nr, zp, ow);
                    for (int r = 0; r < nr; ++r) {
                        add_into(h.get() + r * d.rp, ow[r], d.rp);
                        add_into(skip.get() + r * d.sp, ow[r] + d.rp, d.sp);
                    }
                }
                for (int r = 0; r < nr; ++r) relu(skip.get() + r * d.sp, d.sp);  // in place: rebuilt next step
                matvec(head1_, nr, sp_, y1w);
                for (int r = 0; r < nr; ++r) relu(y1w[r], d.sp);
                matvec(head2_, nr, y1c, lww);
                double temps[kMaxRows], us[kMaxRows];
                int64_t picks[kMaxRows];
                for (int r = 0; r < nr; ++r) {
                    temps[r] = block[r].temperature;
                    us[r] = uniform(block[r].seed, static_cast<uint64_t>(block[r].t));
                }
                sample_block(nr, lw, d.classes, temps, us, picks, scratch.get());
                for (int r = 0; r < nr; ++r) {
                    Row& row = block[r];
                    const int64_t at = row.index * args.n + i;
                    if (args.logits)
                        copy_floats(args.logits + at * d.classes, lw[r], d.classes);
                    args.out[at] = picks[r];
                    row.last = picks[r];
                    row.t += 1;
                }
            }
        }
    }

    Dims d_{};
    bool bf16_ = false;
    int lag_taps_ = 0;
    int64_t lag_history_ = 0, ring_size_ = 0;
    std::vector<float> lag_weight_;
    double sample_rate_ = 0.0;
    std::vector<int64_t> dilations_;
    std::unique_ptr<float[], FreeDeleter> embed_;
    std::vector<Matrix> gate_, out_;
    Matrix head1_, head2_;
};

// sample() and uniforms() alone, for tests: logits (B, classes) float32.
py::array_t<int64_t> sample_rows(py::array_t<float, py::array::c_style | py::array::forcecast> logits,
                                 py::array_t<double, py::array::c_style | py::array::forcecast> temperatures,
                                 py::array_t<uint64_t, py::array::c_style | py::array::forcecast> seeds,
                                 py::array_t<uint64_t, py::array::c_style | py::array::forcecast> positions) {
    if (logits.ndim() != 2) throw std::invalid_argument("logits: (B, classes)");
    const int64_t B = logits.shape(0);
    const int C = static_cast<int>(logits.shape(1));
    if (temperatures.size() != B || seeds.size() != B || positions.size() != B)
        throw std::invalid_argument("per-row arrays: shape (B,)");
    py::array_t<int64_t> out(B);
    auto scratch = aligned_zeros<double>(static_cast<size_t>(kMaxRows) * round_up(C, kLanes));
    for (int64_t b0 = 0; b0 < B; b0 += kMaxRows) {
        const int nr = static_cast<int>(std::min<int64_t>(kMaxRows, B - b0));
        const float* rows[kMaxRows];
        double temps[kMaxRows], us[kMaxRows];
        for (int r = 0; r < nr; ++r) {
            rows[r] = logits.data() + (b0 + r) * C;
            temps[r] = temperatures.at(b0 + r);
            us[r] = uniform(seeds.at(b0 + r), positions.at(b0 + r));
        }
        sample_block(nr, rows, C, temps, us, out.mutable_data() + b0, scratch.get());
    }
    return out;
}

py::array_t<double> uniforms(py::array_t<uint64_t, py::array::c_style | py::array::forcecast> seeds,
                             py::array_t<uint64_t, py::array::c_style | py::array::forcecast> positions) {
    py::array_t<double> out(seeds.size());
    for (py::ssize_t i = 0; i < seeds.size(); ++i) out.mutable_at(i) = uniform(seeds.at(i), positions.at(i));
    return out;
}

bool cpu_has_avx512_bf16() {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
           __builtin_cpu_supports("avx512bf16");
#else
    return false;
#endif
}

bool cpu_has_avx2_fma() {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
    return false;
#endif
}

}  // namespace

PYBIND11_MODULE(ENGINE_MODULE, m) {
    m.doc() = "Compiled WaveNet chunk generator (" ENGINE_STR(ENGINE_MODULE) ")";
    m.attr("VARIANT") = kVariant;
    m.def("cpu_has_avx512_bf16", &cpu_has_avx512_bf16, "Whether this CPU (and OS) runs the avx512 variant.");
    m.def("cpu_has_avx2_fma", &cpu_has_avx2_fma, "Whether this CPU (and OS) runs the avx2 variant.");
    m.def("sample_rows", &sample_rows, "generator.sample(logits, T, uniforms(seeds, positions)), compiled.");
    m.def("uniforms", &uniforms, "generator.uniforms(seeds, positions), compiled.");
    py::class_<Engine>(m, "Engine")
        .def(py::init<py::dict, py::list, const std::string&>(), py::arg("config"), py::arg("weights"),
             py::arg("precision") = "fp32")
        .def("run", &Engine::run, py::arg("queues"), py::arg("slots"), py::arg("t"), py::arg("last"),
             py::arg("counts"), py::arg("bias"), py::arg("seeds"), py::arg("temperatures"), py::arg("threads") = 1,
             py::arg("logits") = py::none(), py::arg("frames") = py::none(), py::arg("frame_offsets") = py::none(),
             py::arg("hop") = 0, py::arg("lag") = py::none())
        .def("info", &Engine::info);
}
