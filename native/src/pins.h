/*
 * pins.h — the pin directory on bpffs: make sure there is a bpffs under it,
 * and the small filesystem chores (list, unlink, rmdir) around pins.
 *
 * Layout under the pin root:
 *   maps/<map name>     every named map (maps/config is pinned last)
 *   progs/<hook>        xdp, tc_egress, tc_ingress
 *   links/xdp@<ifname>  one XDP link per interface
 */
#pragma once

#include <string>
#include <vector>

namespace fg
{

std::string JoinPath(const std::string &a, const std::string &b);
bool PathExists(const std::string &path);
void MkdirP(const std::string &path, unsigned mode);
/* mkdir -p dir; mount a bpffs on it unless it already is on one (e.g. under /sys/fs/bpf). */
void EnsureBpffs(const std::string &dir);
/* File names in dir (no . and ..); empty when dir does not exist. */
std::vector<std::string> ListDir(const std::string &dir);
/* unlink(), ENOENT is not an error. Returns whether something was removed. */
bool UnlinkIfExists(const std::string &path);
void RmdirIfExists(const std::string &path);

} // namespace fg

namespace fg
{

/*
 * Remove every pin under the root and the maps/ progs/ links/ directories
 * (not the root nor its bpffs mount). maps/config goes first, so a crash
 * half-way leaves what open() recognises as a half-created directory.
 */
void RemoveAllPins(const std::string &root);

} // namespace fg
