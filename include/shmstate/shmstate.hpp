// shmstate/shmstate.hpp: the whole public API.
#pragma once

#include <shmstate/config.hpp>

#include <shmstate/atom.hpp>
#include <shmstate/atomic.hpp>
#include <shmstate/error.hpp>
#include <shmstate/fifo_lock.hpp>
#include <shmstate/inspect.hpp>
#include <shmstate/monitor.hpp>
#include <shmstate/segment.hpp>
#include <shmstate/signal.hpp>
#include <shmstate/store.hpp>
#include <shmstate/version.hpp>
