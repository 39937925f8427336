#pragma once
/// \file `peft::method_config`: the run-time options of a plan's methods. Which methods apply to
/// which roles is compile-time (`peft::plan`); how big they are is decided here, at run time.
///
/// Core knows no method: each method declares its own options type in its header (`lora_config` in
/// methods/lora.hpp, `adapter_config` in methods/adapter.hpp, ...), and this is a bag that holds one
/// options object per type.

#include <any>
#include <memory>
#include <type_traits>
#include <utility>
#include <vector>

namespace peft {

/// One options object per method family, looked up by its type. Value semantics: copying a
/// `method_config` copies the options. Build one from any options objects:
/// `method_config{lora_config{.r = 8, .alpha = 16}, adapter_config{.bottleneck = 64}}`.
/// Guarantees: a method whose options are absent sees its options type's defaults; a reference from
/// `get` stays valid while this object lives (storing other options does not move it), so a
/// command-line parser may bind to it.
class method_config {
 public:
  method_config() = default;
  method_config(const method_config& other) { *this = other; }
  method_config(method_config&&) noexcept = default;
  method_config& operator=(const method_config& other) {
    if (this == &other) return *this;
    items_.clear();
    for (const auto& item : other.items_) items_.push_back(std::make_unique<std::any>(*item));
    return *this;
  }
  method_config& operator=(method_config&&) noexcept = default;
  ~method_config() = default;
  template <class... Options>
    requires(sizeof...(Options) > 0 && (!std::is_same_v<std::remove_cvref_t<Options>, method_config> && ...))
  method_config(Options&&... options) {  // NOLINT: implicit, so `{lora_config{...}}` reads naturally
    (set(std::forward<Options>(options)), ...);
  }

  /// Stores `o`, replacing options of the same type.
  template <class O>
  method_config& set(O&& o) {
    get<std::remove_cvref_t<O>>() = std::forward<O>(o);
    return *this;
  }
  /// The options of type `O`: the stored ones, or `O{}` when none are stored.
  template <class O>
  [[nodiscard]] const O& get() const {
    if (const O* o = find<O>()) return *o;
    static const O defaults{};
    return defaults;
  }
  /// Mutable options of type `O`, stored as `O{}` first when absent.
  template <class O>
  O& get() {
    if (O* o = const_cast<O*>(find<O>())) return *o;
    items_.push_back(std::make_unique<std::any>(O{}));
    return *std::any_cast<O>(items_.back().get());
  }
  /// Whether options of type `O` are stored.
  template <class O>
  [[nodiscard]] bool has() const noexcept {
    return find<O>() != nullptr;
  }

 private:
  template <class O>
  const O* find() const noexcept {
    for (const auto& item : items_)
      if (const O* o = std::any_cast<O>(item.get())) return o;
    return nullptr;
  }

  std::vector<std::unique_ptr<std::any>> items_;  // each on the heap: references stay valid
};

}  // namespace peft
