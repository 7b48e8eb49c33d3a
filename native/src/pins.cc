#include "pins.h"

#include "errors.h"

#include <dirent.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <cerrno>

namespace fg
{

namespace
{
constexpr long kBpfFsMagic = 0xcafe4a11;
}

std::string JoinPath(const std::string &a, const std::string &b)
{
	if (a.empty() || a.back() == '/')
		return a + b;
	return a + "/" + b;
}

bool PathExists(const std::string &path)
{
	struct stat st;
	return lstat(path.c_str(), &st) == 0;
}

void MkdirP(const std::string &path, unsigned mode)
{
	if (path.empty())
		return;
	/* Walk each prefix; existing components are fine. */
	for (size_t pos = 1;; pos++) {
		pos = path.find('/', pos);
		std::string part = path.substr(0, pos);
		if (!part.empty() && mkdir(part.c_str(), mode) != 0 && errno != EEXIST)
			throw ErrnoError(errno, "create directory " + part);
		if (pos == std::string::npos)
			break;
	}
	struct stat st;
	if (stat(path.c_str(), &st) != 0)
		throw ErrnoError(errno, "stat " + path);
	if (!S_ISDIR(st.st_mode))
		throw ErrnoError(ENOTDIR, "pin directory " + path, "choose a directory for --bpffs");
}

void EnsureBpffs(const std::string &dir)
{
	MkdirP(dir, 0700);
	struct statfs fs;
	if (statfs(dir.c_str(), &fs) != 0)
		throw ErrnoError(errno, "statfs " + dir);
	if (static_cast<long>(fs.f_type) == kBpfFsMagic)
		return;
	/*
	 * Pins only live on bpffs. Mount a private one (mode 0700: the pins give
	 * control over the data path) rather than failing, as DESIGN.md asks.
	 */
	if (mount("bpf", dir.c_str(), "bpf", 0, "mode=0700") != 0)
		throw ErrnoError(
			errno, "mount bpffs on " + dir,
			errno == EPERM ?
				"needs root or CAP_SYS_ADMIN to mount bpffs; or point --bpffs below /sys/fs/bpf" :
				"");
}

std::vector<std::string> ListDir(const std::string &dir)
{
	std::vector<std::string> names;
	DIR *d = opendir(dir.c_str());
	if (!d) {
		if (errno == ENOENT)
			return names;
		throw ErrnoError(errno, "list " + dir);
	}
	while (struct dirent *e = readdir(d)) {
		std::string name = e->d_name;
		if (name != "." && name != "..")
			names.push_back(name);
	}
	closedir(d);
	return names;
}

bool UnlinkIfExists(const std::string &path)
{
	if (unlink(path.c_str()) == 0)
		return true;
	if (errno == ENOENT)
		return false;
	throw ErrnoError(errno, "remove pin " + path);
}

void RmdirIfExists(const std::string &path)
{
	if (rmdir(path.c_str()) != 0 && errno != ENOENT)
		throw ErrnoError(errno, "remove directory " + path);
}

} // namespace fg

namespace fg
{

void RemoveAllPins(const std::string &root)
{
	UnlinkIfExists(JoinPath(root, "maps/config"));
	for (const char *sub : { "maps", "progs", "links" }) {
		std::string dir = JoinPath(root, sub);
		for (const std::string &name : ListDir(dir))
			UnlinkIfExists(JoinPath(dir, name));
		RmdirIfExists(dir);
	}
}

} // namespace fg
