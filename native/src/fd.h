/*
 * fd.h — owning file descriptor. Every bpf object the addon holds (maps,
 * programs, links) is an fd; owning them through one RAII type means an
 * exception half-way through open() or attach never leaks a reference that
 * would keep a map or an XDP link alive.
 */
#pragma once

#include <fcntl.h>
#include <unistd.h>

namespace fg
{

class UniqueFd
{
public:
	UniqueFd() = default;
	explicit UniqueFd(int fd) : fd_(fd)
	{
	}
	UniqueFd(UniqueFd &&o) noexcept : fd_(o.release())
	{
	}
	UniqueFd &operator=(UniqueFd &&o) noexcept
	{
		if (this != &o)
			reset(o.release());
		return *this;
	}
	UniqueFd(const UniqueFd &) = delete;
	UniqueFd &operator=(const UniqueFd &) = delete;
	~UniqueFd()
	{
		reset();
	}

	int get() const
	{
		return fd_;
	}
	bool valid() const
	{
		return fd_ >= 0;
	}
	int release()
	{
		int fd = fd_;
		fd_ = -1;
		return fd;
	}
	void reset(int fd = -1)
	{
		if (fd_ >= 0)
			::close(fd_);
		fd_ = fd;
	}

private:
	int fd_ = -1;
};

} // namespace fg
