// oneDNN convolutions for XLA:CPU, as XLA FFI custom calls (see ce_jax/onednn.py).
//
// Three handlers over the same geometry, float32, channels-last, 1-3 spatial dims:
//   ce_onednn_conv_fwd:        y  = conv(x, w)                       x (N, *S, G*ci)  w (*K, ci, G*co)
//   ce_onednn_conv_bwd_data:   dx = conv_transpose(dy, w)            dy (N, *So, G*co) -> (N, *S, G*ci)
//   ce_onednn_conv_bwd_weights: dw = sum_{n,p} x-patch * dy           -> (*K, ci, G*co)
//   ce_onednn_conv_bwd:         dx and dw in one call (what the custom VJP uses)
// Attributes: strides (int64[d]), padding (int64[2d]: low_0, high_0, low_1, high_1, ...),
// groups (int64). The kernel layout is JAX/Flax's HWIO with groups folded into O
// (lax.conv_general_dilated with feature_group_count), described to oneDNN by strides; oneDNN
// picks its preferred weight layout ("any") and we reorder to and from it. Activations stay in
// the caller's channels-last layout (no reorder).
//
// Primitives are cached per (kind, geometry) so a training step pays oneDNN's dispatch and JIT
// only on the first call.

#include <cstdint>
#include <cstdlib>
#include <new>
#include <initializer_list>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "oneapi/dnnl/dnnl.hpp"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

using dims_t = dnnl::memory::dims;
using tag = dnnl::memory::format_tag;
using dt = dnnl::memory::data_type;

dnnl::engine& Engine() {
  static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

// Every primitive takes its scratchpad from us (scratchpad_mode::user), not from oneDNN's
// library-managed one. oneDNN 3.2's library scratchpad is thread-local and sized when a
// primitive executes; XLA calls these handlers from its own worker threads, and on AVX2-only CPUs
// (where grouped convolutions take the gemm implementation, which keeps im2col buffers there) a
// forward convolution read a null scratchpad and crashed. One buffer, grown to the largest need,
// is shared by all executions: they are serialized (execute_mutex).
dnnl::primitive_attr UserScratchpad() {
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  return attr;
}

struct Geometry {
  int64_t nd = 0;           // spatial dims (1..3)
  int64_t n = 0, c = 0, o = 0, g = 1;
  std::vector<int64_t> in, out, k, strides, pad_lo, pad_hi;

  std::string Key(const char* kind) const {
    std::ostringstream s;
    s << kind << '|' << n << ',' << c << ',' << o << ',' << g;
    for (auto* v : {&in, &out, &k, &strides, &pad_lo, &pad_hi}) {
      s << '|';
      for (int64_t x : *v) s << x << ',';
    }
    return s.str();
  }

  // Channels-last activation descriptor: logical dims (N, C, *S), physical N, *S, C.
  dnnl::memory::desc Activation(int64_t channels, const std::vector<int64_t>& sp) const {
    dims_t dims = {n, channels};
    dims.insert(dims.end(), sp.begin(), sp.end());
    dims_t strides(dims.size());
    int64_t acc = channels;
    strides[1] = 1;
    for (int64_t i = nd - 1; i >= 0; --i) {
      strides[2 + i] = acc;
      acc *= sp[i];
    }
    strides[0] = acc;
    return dnnl::memory::desc(dims, dt::f32, strides);
  }

  // The caller's kernel (*K, ci, G*co) as oneDNN weights (G, co, ci, *K) or (O, ci, *K).
  dnnl::memory::desc UserWeights() const {
    const int64_t ci = c / g, co = o / g;
    std::vector<int64_t> kstride(nd);
    int64_t acc = ci * o;
    for (int64_t i = nd - 1; i >= 0; --i) {
      kstride[i] = acc;
      acc *= k[i];
    }
    dims_t dims, strides;
    if (g > 1) {
      dims = {g, co, ci};
      strides = {co, 1, o};
    } else {
      dims = {o, ci};
      strides = {1, o};
    }
    dims.insert(dims.end(), k.begin(), k.end());
    strides.insert(strides.end(), kstride.begin(), kstride.end());
    return dnnl::memory::desc(dims, dt::f32, strides);
  }

  dnnl::memory::desc AnyWeights() const {
    const int64_t ci = c / g, co = o / g;
    dims_t dims = g > 1 ? dims_t{g, co, ci} : dims_t{o, ci};
    dims.insert(dims.end(), k.begin(), k.end());
    return dnnl::memory::desc(dims, dt::f32, tag::any);
  }

  dnnl::convolution_forward::primitive_desc ForwardPd() const {
    return dnnl::convolution_forward::primitive_desc(
        Engine(), dnnl::prop_kind::forward_training, dnnl::algorithm::convolution_direct,
        Activation(c, in), AnyWeights(), Activation(o, out), dims_t(strides.begin(), strides.end()),
        dims_t(pad_lo.begin(), pad_lo.end()), dims_t(pad_hi.begin(), pad_hi.end()),
        UserScratchpad());
  }
};

// One cached primitive plus the reorder between the caller's and oneDNN's weight layouts.
struct Entry {
  dnnl::primitive conv;
  dnnl::memory::desc weights_md;  // the layout the primitive wants
  dnnl::memory::desc conv_scratchpad;
  bool reorder = false;
  dnnl::reorder weights_reorder;  // user -> primitive (fwd, bwd data) or primitive -> user (bwd w)
  dnnl::memory::desc reorder_scratchpad;
};

std::mutex cache_mutex;
// XLA may run independent custom calls concurrently (e.g. the data and weight gradients of one
// layer), each of which would start a full OpenMP team: oversubscribed, they are 1.3-1.5x slower
// than one after the other. Executions are serialized; each uses every core.
std::mutex execute_mutex;
// The shared scratchpad (see UserScratchpad): `md` over a buffer of at least its size, page
// aligned. Callers hold execute_mutex, and the buffer lives as long as the process.
dnnl::memory Scratchpad(const dnnl::memory::desc& md) {
  static void* buffer = nullptr;
  static size_t capacity = 0;
  const size_t need = md.get_size();
  if (need > capacity) {
    std::free(buffer);
    capacity = (need + 4095) / 4096 * 4096;
    buffer = std::aligned_alloc(4096, capacity);
    if (buffer == nullptr) {
      capacity = 0;
      throw std::bad_alloc();
    }
  }
  return dnnl::memory(md, Engine(), need ? buffer : nullptr);
}

std::unordered_map<std::string, std::shared_ptr<Entry>>& Cache() {
  static auto* cache = new std::unordered_map<std::string, std::shared_ptr<Entry>>();
  return *cache;
}

enum class Kind { kForward, kBackwardData, kBackwardWeights };

std::shared_ptr<Entry> Build(const Geometry& geo, Kind kind) {
  auto entry = std::make_shared<Entry>();
  const auto user_w = geo.UserWeights();
  const dims_t strides(geo.strides.begin(), geo.strides.end());
  const dims_t lo(geo.pad_lo.begin(), geo.pad_lo.end()), hi(geo.pad_hi.begin(), geo.pad_hi.end());
  auto fwd_pd = geo.ForwardPd();
  if (kind == Kind::kForward) {
    entry->conv = dnnl::convolution_forward(fwd_pd);
    entry->weights_md = fwd_pd.weights_desc();
    entry->conv_scratchpad = fwd_pd.scratchpad_desc();
  } else if (kind == Kind::kBackwardData) {
    dnnl::convolution_backward_data::primitive_desc pd(
        Engine(), dnnl::algorithm::convolution_direct, geo.Activation(geo.c, geo.in),
        geo.AnyWeights(), geo.Activation(geo.o, geo.out), strides, lo, hi, fwd_pd, UserScratchpad());
    entry->conv = dnnl::convolution_backward_data(pd);
    entry->weights_md = pd.weights_desc();
    entry->conv_scratchpad = pd.scratchpad_desc();
  } else {
    dnnl::convolution_backward_weights::primitive_desc pd(
        Engine(), dnnl::algorithm::convolution_direct, geo.Activation(geo.c, geo.in),
        geo.AnyWeights(), geo.Activation(geo.o, geo.out), strides, lo, hi, fwd_pd, UserScratchpad());
    entry->conv = dnnl::convolution_backward_weights(pd);
    entry->weights_md = pd.diff_weights_desc();
    entry->conv_scratchpad = pd.scratchpad_desc();
  }
  entry->reorder = entry->weights_md != user_w;
  if (entry->reorder) {
    const bool to_user = kind == Kind::kBackwardWeights;
    dnnl::reorder::primitive_desc pd(Engine(), to_user ? entry->weights_md : user_w, Engine(),
                                     to_user ? user_w : entry->weights_md, UserScratchpad());
    entry->weights_reorder = dnnl::reorder(pd);
    entry->reorder_scratchpad = pd.scratchpad_desc();
  }
  return entry;
}

std::shared_ptr<Entry> Get(const Geometry& geo, Kind kind) {
  static const char* names[] = {"fwd", "bwd_data", "bwd_weights"};
  const std::string key = geo.Key(names[static_cast<int>(kind)]);
  {
    std::lock_guard<std::mutex> lock(cache_mutex);
    auto it = Cache().find(key);
    if (it != Cache().end()) return it->second;
  }
  auto entry = Build(geo, kind);
  std::lock_guard<std::mutex> lock(cache_mutex);
  return Cache().emplace(key, entry).first->second;
}

// Geometry from the activation shapes (x: (N, *S, C), y: (N, *So, O)), kernel (*K, ci, O).
ffi::Error MakeGeometry(ffi::Span<const int64_t> x, ffi::Span<const int64_t> y,
                        ffi::Span<const int64_t> w, ffi::Span<const int64_t> strides,
                        ffi::Span<const int64_t> padding, int64_t groups, Geometry* geo) {
  const int64_t rank = static_cast<int64_t>(x.size());
  const int64_t nd = rank - 2;
  if (nd < 1 || nd > 3 || static_cast<int64_t>(y.size()) != rank ||
      static_cast<int64_t>(w.size()) != rank) {
    return ffi::Error(ffi::ErrorCode::kInvalidArgument,
                      "ce_onednn_conv: operands must have rank 3-5 (1-3 spatial dims)");
  }
  if (static_cast<int64_t>(strides.size()) != nd ||
      static_cast<int64_t>(padding.size()) != 2 * nd) {
    return ffi::Error(ffi::ErrorCode::kInvalidArgument,
                      "ce_onednn_conv: strides must have one entry and padding two per spatial dim");
  }
  geo->nd = nd;
  geo->n = x[0];
  geo->c = x[rank - 1];
  geo->o = y[rank - 1];
  geo->g = groups;
  if (groups < 1 || geo->c % groups || geo->o % groups || w[nd] * groups != geo->c ||
      w[nd + 1] != geo->o || y[0] != geo->n) {
    return ffi::Error(ffi::ErrorCode::kInvalidArgument,
                      "ce_onednn_conv: inconsistent channels/groups/batch");
  }
  for (int64_t i = 0; i < nd; ++i) {
    geo->in.push_back(x[1 + i]);
    geo->out.push_back(y[1 + i]);
    geo->k.push_back(w[i]);
    geo->strides.push_back(strides[i]);
    geo->pad_lo.push_back(padding[2 * i]);
    geo->pad_hi.push_back(padding[2 * i + 1]);
  }
  return ffi::Error::Success();
}

template <typename Fn>
ffi::Error Guard(Fn&& fn) {
  try {
    return fn();
  } catch (const dnnl::error& e) {
    return ffi::Error(ffi::ErrorCode::kInternal, std::string("ce_onednn_conv: oneDNN error: ") +
                                                     e.what());
  } catch (const std::exception& e) {
    return ffi::Error(ffi::ErrorCode::kInternal, std::string("ce_onednn_conv: ") + e.what());
  }
}

// Runs e's weight reorder from `src` to `dst` with the shared scratchpad.
void Reorder(const Entry& e, dnnl::stream& stream, dnnl::memory& src, dnnl::memory& dst) {
  e.weights_reorder.execute(stream, {{DNNL_ARG_FROM, src}, {DNNL_ARG_TO, dst},
                                     {DNNL_ARG_SCRATCHPAD, Scratchpad(e.reorder_scratchpad)}});
}

// The caller's kernel in the layout primitive `e` wants (a reorder into a fresh buffer if needed).
dnnl::memory PrimitiveWeights(const Geometry& geo, const Entry& e, dnnl::stream& stream,
                              void* w) {
  dnnl::memory user_w(geo.UserWeights(), Engine(), w);
  if (!e.reorder) return user_w;
  dnnl::memory wei(e.weights_md, Engine());
  Reorder(e, stream, user_w, wei);
  return wei;
}

// Each Run* enqueues one primitive on `stream`; callers hold execute_mutex and wait.
void RunForward(const Geometry& geo, const Entry& e, dnnl::stream& stream, void* x, void* w,
                void* y) {
  e.conv.execute(stream, {{DNNL_ARG_SRC, dnnl::memory(geo.Activation(geo.c, geo.in), Engine(), x)},
                          {DNNL_ARG_WEIGHTS, PrimitiveWeights(geo, e, stream, w)},
                          {DNNL_ARG_DST, dnnl::memory(geo.Activation(geo.o, geo.out), Engine(), y)},
                          {DNNL_ARG_SCRATCHPAD, Scratchpad(e.conv_scratchpad)}});
}

void RunBackwardData(const Geometry& geo, const Entry& e, dnnl::stream& stream, void* dy, void* w,
                     void* dx) {
  e.conv.execute(stream,
                 {{DNNL_ARG_DIFF_DST, dnnl::memory(geo.Activation(geo.o, geo.out), Engine(), dy)},
                  {DNNL_ARG_WEIGHTS, PrimitiveWeights(geo, e, stream, w)},
                  {DNNL_ARG_DIFF_SRC, dnnl::memory(geo.Activation(geo.c, geo.in), Engine(), dx)},
                  {DNNL_ARG_SCRATCHPAD, Scratchpad(e.conv_scratchpad)}});
}

void RunBackwardWeights(const Geometry& geo, const Entry& e, dnnl::stream& stream, void* x,
                        void* dy, void* dw) {
  dnnl::memory user_dw(geo.UserWeights(), Engine(), dw);
  dnnl::memory diff_wei = e.reorder ? dnnl::memory(e.weights_md, Engine()) : user_dw;
  e.conv.execute(stream,
                 {{DNNL_ARG_SRC, dnnl::memory(geo.Activation(geo.c, geo.in), Engine(), x)},
                  {DNNL_ARG_DIFF_DST, dnnl::memory(geo.Activation(geo.o, geo.out), Engine(), dy)},
                  {DNNL_ARG_DIFF_WEIGHTS, diff_wei},
                  {DNNL_ARG_SCRATCHPAD, Scratchpad(e.conv_scratchpad)}});
  if (e.reorder) Reorder(e, stream, diff_wei, user_dw);
}

// One primitive to run: its kind, its Run* function and that function's three buffers.
struct Step {
  Kind kind;
  void (*run)(const Geometry&, const Entry&, dnnl::stream&, void*, void*, void*);
  void* a;
  void* b;
  void* out;
};

// What every handler does: the geometry from the activation shapes (x, y) and the kernel (w),
// the cached primitives of `steps` (built outside the lock), then the steps in order on one
// stream under execute_mutex.
ffi::Error Execute(ffi::Span<const int64_t> x, ffi::Span<const int64_t> y,
                   ffi::Span<const int64_t> w, ffi::Span<const int64_t> strides,
                   ffi::Span<const int64_t> padding, int64_t groups,
                   std::initializer_list<Step> steps) {
  return Guard([&]() -> ffi::Error {
    Geometry geo;
    auto err = MakeGeometry(x, y, w, strides, padding, groups, &geo);
    if (err.failure()) return err;
    std::vector<std::shared_ptr<Entry>> entries;
    for (const Step& s : steps) entries.push_back(Get(geo, s.kind));
    std::lock_guard<std::mutex> lock(execute_mutex);
    dnnl::stream stream(Engine());
    auto entry = entries.begin();
    for (const Step& s : steps) s.run(geo, **entry++, stream, s.a, s.b, s.out);
    stream.wait();
    return ffi::Error::Success();
  });
}

ffi::Error ForwardImpl(ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> w,
                       ffi::ResultBuffer<ffi::F32> y, ffi::Span<const int64_t> strides,
                       ffi::Span<const int64_t> padding, int64_t groups) {
  return Execute(x.dimensions(), y->dimensions(), w.dimensions(), strides, padding, groups,
                 {{Kind::kForward, RunForward, x.typed_data(), w.typed_data(), y->typed_data()}});
}

ffi::Error BackwardDataImpl(ffi::Buffer<ffi::F32> dy, ffi::Buffer<ffi::F32> w,
                            ffi::ResultBuffer<ffi::F32> dx, ffi::Span<const int64_t> strides,
                            ffi::Span<const int64_t> padding, int64_t groups) {
  return Execute(dx->dimensions(), dy.dimensions(), w.dimensions(), strides, padding, groups,
                 {{Kind::kBackwardData, RunBackwardData, dy.typed_data(), w.typed_data(),
                   dx->typed_data()}});
}

ffi::Error BackwardWeightsImpl(ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> dy,
                               ffi::ResultBuffer<ffi::F32> dw, ffi::Span<const int64_t> strides,
                               ffi::Span<const int64_t> padding, int64_t groups) {
  return Execute(x.dimensions(), dy.dimensions(), dw->dimensions(), strides, padding, groups,
                 {{Kind::kBackwardWeights, RunBackwardWeights, x.typed_data(), dy.typed_data(),
                   dw->typed_data()}});
}

// Both gradients in one call: dx then dw under one lock. XLA cannot interleave other work
// between them (or run them on two threads, each with its own OpenMP team).
ffi::Error BackwardImpl(ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> w,
                        ffi::Buffer<ffi::F32> dy, ffi::ResultBuffer<ffi::F32> dx,
                        ffi::ResultBuffer<ffi::F32> dw, ffi::Span<const int64_t> strides,
                        ffi::Span<const int64_t> padding, int64_t groups) {
  return Execute(x.dimensions(), dy.dimensions(), w.dimensions(), strides, padding, groups,
                 {{Kind::kBackwardData, RunBackwardData, dy.typed_data(), w.typed_data(),
                   dx->typed_data()},
                  {Kind::kBackwardWeights, RunBackwardWeights, x.typed_data(), dy.typed_data(),
                   dw->typed_data()}});
}

using F32Buffer = ffi::Buffer<ffi::F32>;

// The attributes every handler takes after its buffers (see the top of this file).
template <typename Binding>
auto ConvAttrs(Binding&& binding) {
  return std::forward<Binding>(binding)
      .template Attr<ffi::Span<const int64_t>>("strides")
      .template Attr<ffi::Span<const int64_t>>("padding")
      .template Attr<int64_t>("groups");
}

// The binding of the handlers with two operands and one result: forward, and each gradient alone.
auto TwoOperandsOneResult() {
  return ConvAttrs(ffi::Ffi::Bind().Arg<F32Buffer>().Arg<F32Buffer>().Ret<F32Buffer>());
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(CeOnednnConvBwd, BackwardImpl,
                              ConvAttrs(ffi::Ffi::Bind()
                                            .Arg<F32Buffer>()    // x
                                            .Arg<F32Buffer>()    // w
                                            .Arg<F32Buffer>()    // dy
                                            .Ret<F32Buffer>()    // dx
                                            .Ret<F32Buffer>()));  // dw

XLA_FFI_DEFINE_HANDLER_SYMBOL(CeOnednnConvFwd, ForwardImpl, TwoOperandsOneResult());
XLA_FFI_DEFINE_HANDLER_SYMBOL(CeOnednnConvBwdData, BackwardDataImpl, TwoOperandsOneResult());
XLA_FFI_DEFINE_HANDLER_SYMBOL(CeOnednnConvBwdWeights, BackwardWeightsImpl, TwoOperandsOneResult());

extern "C" const char* CeOnednnVersion() {
  static std::string v = [] {
    const dnnl_version_t* ver = dnnl_version();
    std::ostringstream s;
    s << ver->major << '.' << ver->minor << '.' << ver->patch;
    return s.str();
  }();
  return v.c_str();
}
