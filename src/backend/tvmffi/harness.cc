// pytie's C++ harness for the tvm-ffi backends (issue 23, part 1).
//
// Compiled by scripts/build-tvmffi-harness against the headers of the very
// build it drives (tvm_ffi.libinfo.include_paths() of the venv: the published
// wheel's, the activated build's, the ASan build's), with that library's
// compiler and flags, and linked against the venv's libtvm_ffi.so. So every
// step below runs upstream's own inline C++, compiled from upstream's headers:
//
//   hold / move (the holder)  ObjectRef (ObjectPtr<Object> copy: Object::IncRef)
//   release                   ~ObjectRef (ObjectPtr::reset: Object::DecRef)
//   release_foreign           ~ObjectRef on a std::thread, without the GIL
//   weak                      WeakObjectPtr<Object>(const ObjectPtr&) (IncWeakRef)
//   unweak                    ~WeakObjectPtr (DecWeakRef)
//   lock                      WeakObjectPtr::lock() (TryPromoteWeakPtr)
//   ret                       an ObjectRef returned by a typed ffi::Function
//   take (move's callee)      a typed ffi::Function with an `Any` parameter
//                             (AnyView -> Any: an RValueRef is stolen)
//   call / call_move          a typed ffi::Function calling a Python callback
//                             with a holder's object, borrowed or as an
//                             RValueRef (rvalue_ref.h)
//   new V cpp                 make_object<PytieCppNodeObj>() (memory.h's
//                             object allocator), returned the first time
//   the field of a List/Dict  SeqBaseObj::operator[], MapBaseObj::find;
//                             cleared by List::Set / Dict::Set
//   teardown's `obj->x = nullptr`   Any::operator=(Any&&) on the field
//   observation               Object::use_count(), Object::type_index(),
//                             TVMFFIPyPeekWord(TVMFFIPyHeader(body))
//
// The Rust side (harness.rs) calls the `extern "C"` functions; Python calls
// the `pytie.tvmffi.*` global functions registered at load. Nothing here
// takes the GIL: the Rust caller holds it where the step is Python's, and
// releases it around `pytie_holder_free_foreign`.
#include <Python.h>

#define __PYX_EXTERN_C extern "C"

#include <tvm/ffi/any.h>
#include <tvm/ffi/c_api.h>
#include <tvm/ffi/container/dict.h>
#include <tvm/ffi/container/list.h>
#include <tvm/ffi/function.h>
#include <tvm/ffi/memory.h>
#include <tvm/ffi/object.h>
#include <tvm/ffi/reflection/registry.h>
#include <tvm/ffi/rvalue_ref.h>
#include <tvm_ffi_python_object.h>

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <new>
#include <thread>

#define PYTIE_EXPORT extern "C" __attribute__((visibility("default")))

namespace {

using tvm::ffi::Any;
using tvm::ffi::Function;
using tvm::ffi::Dict;
using tvm::ffi::List;
using tvm::ffi::MapBaseObj;
using tvm::ffi::SeqBaseObj;
using tvm::ffi::String;
using tvm::ffi::Object;
using tvm::ffi::ObjectPtr;
using tvm::ffi::ObjectRef;
using tvm::ffi::WeakObjectPtr;
// `details` names the internal namespace on upstream's main and is an alias
// of `detail` in the pinned release: it works on both.
using tvm::ffi::details::ObjectUnsafe;

Object* AsObject(void* body) { return static_cast<Object*>(body); }

// A strong reference to `body`, as C++ code takes one from a raw pointer it
// was handed while someone else keeps the object alive.
ObjectRef RefTo(void* body) {
  return ObjectRef(ObjectUnsafe::ObjectPtrFromUnowned<Object>(AsObject(body)));
}

// The field `x` of a `Node`-layout object: an `Any` at the reflected offset.
Any* FieldAt(void* body, uint64_t offset) {
  return reinterpret_cast<Any*>(static_cast<char*>(body) + offset);
}

// `new V cpp`: an object type defined in C++, registered with reflection so
// Python sees its field `x`, made by `make_object` (memory.h's allocator:
// with tying on, the library's custom allocator) and handed to Python the
// first time by a C++ function's return.
class PytieCppNodeObj : public Object {
 public:
  Any x;
  static constexpr bool _type_mutable = true;
  TVM_FFI_DECLARE_OBJECT_INFO_FINAL("pytie.tvmffi.CppNode", PytieCppNodeObj, Object);
};

// Where an object kind keeps its one field (the `slot` argument below).
enum Slot : int32_t {
  // An `Any` at a byte offset (py_class types, the C++ type, legacy).
  kAnyAt = 0,
  // Element 0 of a `List`.
  kListItem = 1,
  // The value under the key "x" of a `Dict`.
  kDictValue = 2,
};

// The field of a live object, read in place (no count changes).
const Any* SlotAt(void* body, int32_t slot, uint64_t offset) {
  switch (slot) {
    case kListItem: {
      const SeqBaseObj* seq = static_cast<const SeqBaseObj*>(AsObject(body));
      return seq->size() > 0 ? &(*seq)[0] : nullptr;
    }
    case kDictValue: {
      const MapBaseObj* map = static_cast<const MapBaseObj*>(AsObject(body));
      auto it = map->find(Any(String("x")));
      return it == map->end() ? nullptr : &(*it).second;
    }
    default:
      return FieldAt(body, offset);
  }
}

// Offset of `x` in a legacy-layout object (`Node`'s), set at load.
std::atomic<uint64_t> legacy_field_offset{0};

// A legacy-layout object's deleter: what an extension built against the
// published (pre-tying) headers ships. Strong: destroy the field (the Any's
// own destructor). Weak: free the body, which has no allocation prefix.
void LegacyDeleter(void* self, int flags) {
  if (flags & kTVMFFIObjectDeleterFlagBitMaskStrong) {
    FieldAt(self, legacy_field_offset.load(std::memory_order_relaxed))->~Any();
  }
  if (flags & kTVMFFIObjectDeleterFlagBitMaskWeak) {
    std::free(self);
  }
}

}  // namespace

// ---- holders: a C++ `ObjectRef` each, boxed; the Rust side keeps the box.

// A new holder of the object at `body` (a strong reference of its own).
PYTIE_EXPORT void* pytie_holder_new(void* body) { return new ObjectRef(RefTo(body)); }

// The object a holder keeps.
PYTIE_EXPORT void* pytie_holder_get(void* holder) {
  return const_cast<Object*>(static_cast<ObjectRef*>(holder)->get());
}

// The holder `pytie.tvmffi.take` made last, until the Rust side collects
// it: the call's Python result (the holder's address as an int) may fail to
// be made after `take` returned (an `oom`), and the holder must not be lost.
std::atomic<ObjectRef*> last_taken{nullptr};

PYTIE_EXPORT void* pytie_take_last() { return last_taken.exchange(nullptr); }

// Drop a holder on this thread.
PYTIE_EXPORT void pytie_holder_free(void* holder) { delete static_cast<ObjectRef*>(holder); }

// Drop a holder on a new C++ thread, and wait for it: the caller has let go
// of the GIL, as a C++ worker releasing its last reference would find it.
PYTIE_EXPORT void pytie_holder_free_foreign(void* holder) {
  std::thread t([holder] { delete static_cast<ObjectRef*>(holder); });
  t.join();
}

// ---- weak slots: a C++ `WeakObjectPtr<Object>` each, boxed.

PYTIE_EXPORT void* pytie_weak_new(void* body) {
  ObjectPtr<Object> strong = ObjectUnsafe::ObjectPtrFromUnowned<Object>(AsObject(body));
  return new WeakObjectPtr<Object>(strong);
}

PYTIE_EXPORT void pytie_weak_free(void* weak) { delete static_cast<WeakObjectPtr<Object>*>(weak); }

// ---- observation (the caller keeps the storage allocated for the call).

// Strong count (Object::use_count) and weak count (the header's high half).
PYTIE_EXPORT void pytie_counts(void* body, uint32_t* strong, uint32_t* weak) {
  *strong = static_cast<uint32_t>(AsObject(body)->use_count());
  uint64_t combined =
      __atomic_load_n(&ObjectUnsafe::GetHeader(AsObject(body))->combined_ref_count, __ATOMIC_ACQUIRE);
  *weak = static_cast<uint32_t>(combined >> 32);
}

PYTIE_EXPORT int32_t pytie_type_index(void* body) { return AsObject(body)->type_index(); }

// The tag word of an object with the Python allocator's prefix, as upstream
// reads it between steps (TVMFFIPyPeekWord).
PYTIE_EXPORT uintptr_t pytie_tag_word(void* body) {
  return reinterpret_cast<uintptr_t>(TVMFFIPyPeekWord(TVMFFIPyHeader(body)));
}

// The field of a live object (`slot`, `offset`: see Slot): its type index
// (kTVMFFINone when absent), and the object it holds (NULL unless one).
PYTIE_EXPORT int32_t pytie_field(void* body, int32_t slot, uint64_t offset, void** object) {
  const TVMFFIAny* any = reinterpret_cast<const TVMFFIAny*>(SlotAt(body, slot, offset));
  if (any == nullptr) {
    *object = nullptr;
    return kTVMFFINone;
  }
  *object = any->type_index >= kTVMFFIStaticObjectBegin ? any->v_obj : nullptr;
  return any->type_index;
}

// `obj->x = nullptr`, as C++ does it; for a List or Dict, through its own
// mutator.
PYTIE_EXPORT void pytie_clear_field(void* body, int32_t slot, uint64_t offset) {
  switch (slot) {
    case kListItem: {
      List<Any> list = ObjectUnsafe::ObjectRefFromObjectPtr<List<Any>>(
          ObjectUnsafe::ObjectPtrFromUnowned<Object>(AsObject(body)));
      if (list.size() > 0) list.Set(0, Any());
      break;
    }
    case kDictValue: {
      Dict<Any, Any> dict = ObjectUnsafe::ObjectRefFromObjectPtr<Dict<Any, Any>>(
          ObjectUnsafe::ObjectPtrFromUnowned<Object>(AsObject(body)));
      dict.Set(String("x"), Any());
      break;
    }
    default:
      *FieldAt(body, offset) = Any();
  }
}

// Where the C++ type keeps `x`.
// (offsetof on a non-standard-layout type, as object.h's
// GetObjectOffsetToSubclass does it.)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Winvalid-offsetof"
PYTIE_EXPORT uint64_t pytie_cpp_field_offset() { return offsetof(PytieCppNodeObj, x); }
#pragma GCC diagnostic pop

// The deleter slot of an object's header (the observer interposes on it).
PYTIE_EXPORT void* pytie_deleter_slot(void* body) {
  return &ObjectUnsafe::GetHeader(AsObject(body))->deleter;
}

PYTIE_EXPORT void pytie_set_legacy_field_offset(uint64_t offset) {
  legacy_field_offset.store(offset, std::memory_order_relaxed);
}

// `__del__` calls of the `del` kind's wrappers (the glue's DelNode calls
// pytie.tvmffi.finalized from its finalizer).
std::atomic<uint64_t> finalizers_run{0};

PYTIE_EXPORT uint64_t pytie_finalizers_run() {
  return finalizers_run.load(std::memory_order_relaxed);
}

// ---- the FFI functions Python calls (registered when the library loads).

TVM_FFI_STATIC_INIT_BLOCK() {
  namespace refl = tvm::ffi::reflection;
  refl::ObjectDef<PytieCppNodeObj>().def_rw("x", &PytieCppNodeObj::x);
  refl::GlobalDef()
      .def("pytie.tvmffi.finalized",
           []() { finalizers_run.fetch_add(1, std::memory_order_relaxed); })
      // `new V cpp`: made in C++, returned to Python the first time.
      .def("pytie.tvmffi.new_cpp",
           []() -> ObjectRef { return ObjectRef(tvm::ffi::make_object<PytieCppNodeObj>()); })
      // `ret V H`: a C++ function returning the object a holder keeps; the
      // caller receives a new strong reference through the return path.
      .def("pytie.tvmffi.ret",
           [](int64_t holder) -> ObjectRef { return *reinterpret_cast<ObjectRef*>(holder); })
      // `move H V`: a C++ callee that keeps its argument in a new holder;
      // with an rvalue ref (`x._move()`) the conversion steals the
      // wrapper's reference and NULLs its handle. Returns the holder.
      .def("pytie.tvmffi.take",
           [](Any x) -> int64_t {
             if (x.type_index() < kTVMFFIStaticObjectBegin) {
               TVM_FFI_THROW(TypeError) << "pytie.tvmffi.take takes an object";
             }
             ObjectRef* h = new ObjectRef(x.cast<ObjectRef>());
             last_taken.store(h);
             return reinterpret_cast<int64_t>(h);
           })
      // `call V H`: C++ calls a Python callback (an ffi::Function made from a
      // Python callable) with the holder's object, borrowed (an AnyView of
      // the holder's ObjectRef: the callback's argument setter IncRefs), and
      // returns what it returns.
      .def("pytie.tvmffi.call",
           [](int64_t holder, Function cb) -> Any {
             return cb(*reinterpret_cast<ObjectRef*>(holder));
           })
      // `call_move V H`: the same with the holder's reference moved into
      // the call (rvalue_ref.h RValueRef: the argument setter steals the
      // +1 and NULLs the slot); the holder is left empty.
      .def("pytie.tvmffi.call_move",
           [](int64_t holder, Function cb) -> Any {
             ObjectRef r = std::move(*reinterpret_cast<ObjectRef*>(holder));
             return cb(tvm::ffi::RValueRef<ObjectRef>(std::move(r)));
           })
      // `lock V W`: WeakObjectPtr::lock() of a weak slot: the object with a
      // new strong reference, or None once it died.
      .def("pytie.tvmffi.lock",
           [](int64_t weak) -> Any {
             ObjectPtr<Object> p = reinterpret_cast<WeakObjectPtr<Object>*>(weak)->lock();
             if (p == nullptr) return Any();
             return ObjectRef(std::move(p));
           })
      // `new V legacy`: a `Node`-layout object from plain calloc, no
      // allocation prefix (contract §2.1), strong 1 and weak 1, its own
      // deleter; Python receives its one strong reference.
      .def("pytie.tvmffi.new_legacy", [](int32_t type_index) -> ObjectRef {
        uint64_t off = legacy_field_offset.load(std::memory_order_relaxed);
        void* p = std::calloc(1, off + sizeof(Any));
        if (p == nullptr) throw std::bad_alloc();
        TVMFFIObject* h = static_cast<TVMFFIObject*>(p);
        h->combined_ref_count = 1 | (uint64_t{1} << 32);
        h->type_index = type_index;
        h->deleter = LegacyDeleter;
        new (FieldAt(p, off)) Any();
        return ObjectRef(ObjectUnsafe::ObjectPtrFromOwned<Object>(static_cast<Object*>(p)));
      });
}
