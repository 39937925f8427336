#pragma once
/// \file `peft::block_buffers`: the buffers that exist only while one block of a stack runs, shared
/// between the blocks of the stack.
///
/// In training, a layer's backward writes gradients with respect to its input and intermediate
/// values into buffers that are dead once the backward of the block around it has returned, except
/// the block's input gradient, which the block before it reads. In inference (no backward follows),
/// a block's forward outputs are dead once the next block has read the last of them. Either way a
/// stack of N identical blocks needs two sets of such buffers, not N: block i takes set i % 2, its
/// neighbour (reading block i's result) the other. A model opens `open_block(i)` around block i's
/// backward, and around its forward when no backward follows (`ctx.forward_only`); inside it, each `block_buffer(ctx, own)` hands out the
/// next buffer of the set in call order, outside it `own` itself. Blocks of a stack ask in the same
/// order, so block i reuses block i - 2's buffers, each grown to the largest shape seen (`resize`
/// keeps capacity), and the steady state allocates nothing.

#include <array>
#include <cstddef>
#include <memory>
#include <vector>

#include "peft/core/backend.hpp"
#include "peft/core/error.hpp"

namespace peft {

/// Two sets of block buffers, handed out in call order while a block runs.
/// Guarantees: within one `block` scope every `take` returns a distinct tensor; the tensors of
/// `block(i)` and `block(i + 1)` are disjoint; outside a scope `take(own)` returns `own`; with
/// `shared = false` it always does (each layer keeps its own buffers, as without this class).
/// A copy starts empty (a context copy gets fresh buffers).
template <class Tensor>
class block_buffers {
 public:
  /// Open while one block runs (its backward, or its forward in inference); closing it starts the
  /// next block's count afresh.
  class scope {
   public:
    explicit scope(block_buffers* owner) noexcept : owner_(owner) {}
    scope(const scope&) = delete;
    scope& operator=(const scope&) = delete;
    ~scope() {
      if (owner_) owner_->active_ = false;
    }

   private:
    block_buffers* owner_;
  };

  block_buffers() = default;
  block_buffers(const block_buffers& other) : shared(other.shared) {}
  block_buffers& operator=(const block_buffers& other) {
    if (this != &other) *this = block_buffers(other);
    return *this;
  }
  block_buffers(block_buffers&&) noexcept = default;
  block_buffers& operator=(block_buffers&&) noexcept = default;

  /// Whether blocks share buffers (default). Off, every layer keeps its own: more memory, the same
  /// results bit for bit.
  bool shared = true;

  /// Opens the scope of block `index` of a stack. Throws `error` when a scope is already open:
  /// blocks do not nest.
  [[nodiscard]] scope block(std::size_t index) {
    if (!shared) return scope(nullptr);
    if (active_) throw error("block_buffers: a block's scope is already open (blocks of a stack do not nest)");
    active_ = true;
    set_ = index % 2;
    next_ = 0;
    return scope(this);
  }
  /// The next buffer of the open block's set, or `own` outside a block.
  Tensor& take(Tensor& own) {
    if (!active_) return own;
    auto& set = sets_[set_];
    if (next_ == set.size()) set.push_back(std::make_unique<Tensor>());
    return *set[next_++];
  }
  /// Elements held by both sets (their current shapes).
  [[nodiscard]] std::size_t elements() const noexcept {
    std::size_t n = 0;
    for (const auto& set : sets_)
      for (const auto& t : set) n += t->size();
    return n;
  }

 private:
  std::array<std::vector<std::unique_ptr<Tensor>>, 2> sets_;
  std::size_t set_ = 0, next_ = 0;
  bool active_ = false;
};

/// A backend whose context shares block buffers between the blocks of a stack (`ctx.block_scratch`).
template <class B>
concept SharesBlockBuffers = Backend<B> && requires(typename B::context& ctx, typename B::tensor& t) {
  { ctx.block_scratch.take(t) } -> std::same_as<typename B::tensor&>;
  ctx.block_scratch.block(std::size_t{});
};

/// The buffer a layer writes into: the open block's next shared buffer, or the layer's own `own`
/// (outside a block, or on a backend without shared buffers). Layers ask for it for what only their
/// backward writes, and for their forward outputs: models open blocks around forward passes only
/// when no backward follows (`ctx.forward_only`), so a forward before a backward gets `own`.
template <Backend B>
typename B::tensor& block_buffer(typename B::context& ctx, typename B::tensor& own) {
  if constexpr (SharesBlockBuffers<B>) return ctx.block_scratch.take(own);
  else return own;
}

/// Opens block `index`'s scope (nothing on a backend without shared buffers).
template <Backend B>
auto open_block(typename B::context& ctx, std::size_t index) {
  if constexpr (SharesBlockBuffers<B>) return ctx.block_scratch.block(index);
  else return index;  // nothing to close
}

}  // namespace peft
