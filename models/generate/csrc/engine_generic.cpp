// The portable variant: baseline flags, plain loops.
#define ENGINE_MODULE _engine_generic
#include "engine_impl.h"
