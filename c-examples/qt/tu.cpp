// A TU of an ECTP-3 connection driven by a Qt event loop.
//
// The ECTP descriptor is a real file descriptor that polls readable exactly
// when mrecvmsg would not block (end of connection included), so a
// QSocketNotifier on it, draining mrecvmsg with MSG_DONTWAIT, is all the
// receiving side needs: no thread of our own.
//
// Asking for a token is another matter: mtoken_get blocks until the TO
// answers (or the library gives up after its retries) and mtoken_return
// blocks until the TO has acknowledged everything sent. Done on the GUI or
// main thread, that would stall the event loop for a round trip at best and
// seconds at worst, while the TO's data piles up unread. So the token
// exchange runs on a QThread of its own; the library's calls are thread-safe,
// and the notifier keeps draining meanwhile.
#include "tu.h"

#include "ectp.h"

#include <QDeadlineTimer>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <utility>

namespace {

constexpr qsizetype RecvBufLen = 65536;
// At most this many messages per notifier activation, so that timers and
// signals get their turn under a fast stream; the notifier fires again.
constexpr int MaxMessagesPerDrain = 256;
// How long to wait at the end for the token thread, which the end of the
// connection or mleave wakes from any blocking call.
constexpr int TokenThreadWaitMs = 5000;

// strerror_r is the XSI one (int) or the GNU one (char *) depending on the
// C library; these two overloads accept either.
[[maybe_unused]] QString strerrorResult(int, const char *buf)
{
    return QString::fromLocal8Bit(buf);
}
[[maybe_unused]] QString strerrorResult(const char *text, const char *)
{
    return QString::fromLocal8Bit(text);
}

QString quoted(const QByteArray &message)
{
    return QLatin1Char('"') + QString::fromUtf8(message) + QLatin1Char('"');
}

} // namespace

void report(const QString &text)
{
    // One fprintf per line: stdio locks the stream, so lines from the token
    // thread and the main thread do not mix.
    std::fprintf(stderr, "qtclnt: %s\n", text.toLocal8Bit().constData());
}

QString errnoText(int error)
{
    char buf[256] = {};
    return strerrorResult(strerror_r(error, buf, sizeof buf), buf);
}

Tu::Tu(TuConfig config, QObject *parent)
    : QObject(parent), m_config(std::move(config)), m_buf(RecvBufLen, Qt::Uninitialized)
{
    m_tokenTimer.setSingleShot(true);
    m_exitTimer.setSingleShot(true);
    connect(&m_tokenTimer, &QTimer::timeout, this, &Tu::startTokenExchange);
    connect(&m_exitTimer, &QTimer::timeout, this, [this] {
        report(QStringLiteral("leaving after %1 ms, received %2 bytes")
                   .arg(m_config.exitAfterMs)
                   .arg(m_bytes));
        finish(0, false);
    });
}

Tu::~Tu()
{
    // Normally finish() did all this; here for an exit by another way.
    if (!m_finished && m_sd >= 0) {
        m_notifier.reset();
        mleave(m_sd, 0);
    }
    if (m_tokenThread)
        m_tokenThread->wait();
}

bool Tu::start()
{
    if (m_config.output == QLatin1String("-")) {
        if (!m_out.open(stdout, QIODevice::WriteOnly)) {
            report(QStringLiteral("standard output: %1").arg(m_out.errorString()));
            return false;
        }
    } else {
        m_out.setFileName(m_config.output);
        if (!m_out.open(QIODevice::WriteOnly | QIODevice::Truncate)) {
            report(QStringLiteral("%1: %2").arg(m_config.output, m_out.errorString()));
            return false;
        }
    }

    m_sd = msocket(m_config.owner.ss_family, SOCK_DGRAM, 0);
    if (m_sd == -1) {
        report(QStringLiteral("msocket: %1").arg(errnoText(errno)));
        return false;
    }
    // Blocks until the TO accepts or refuses, or the library gives up: before
    // the event loop runs there is nothing else to do.
    if (mjoin(m_sd, reinterpret_cast<const sockaddr *>(&m_config.owner), m_config.ownerLen,
              reinterpret_cast<const sockaddr *>(&m_config.group), m_config.groupLen)
        == -1) {
        const int e = errno;
        report(QStringLiteral("mjoin(owner %1, group %2 port %3): %4")
                   .arg(m_config.ownerText, m_config.groupText)
                   .arg(m_config.port)
                   .arg(errnoText(e)));
        mleave(m_sd, 0); // releases the descriptor
        m_sd = -1;
        return false;
    }

    uint32_t userId = 0;
    socklen_t len = sizeof userId;
    if (mgetsockopt(m_sd, SOL_ECTP, ECTP_USER_ID, &userId, &len) == -1)
        report(QStringLiteral("mgetsockopt(ECTP_USER_ID): %1").arg(errnoText(errno)));
    else
        report(QStringLiteral("joined as user %1").arg(userId));

    m_notifier = std::make_unique<QSocketNotifier>(m_sd, QSocketNotifier::Read);
    connect(m_notifier.get(), &QSocketNotifier::activated, this, &Tu::drain);
    if (m_config.tokenAfterMs >= 0)
        m_tokenTimer.start(m_config.tokenAfterMs);
    if (m_config.exitAfterMs >= 0)
        m_exitTimer.start(m_config.exitAfterMs);
    return true;
}

void Tu::stop(int signal)
{
    if (m_finished)
        return;
    report(QStringLiteral("signal %1: leaving, received %2 bytes").arg(signal).arg(m_bytes));
    finish(128 + signal, false);
}

void Tu::drain()
{
    for (int i = 0; i < MaxMessagesPerDrain && !m_finished; i++) {
        ectp_rcvinfo info{};
        info.fromlen = sizeof info.from;
        const ssize_t n = mrecvmsg(m_sd, m_buf.data(), size_t(m_buf.size()), MSG_DONTWAIT, &info);
        if (n > 0) {
            m_bytes += quint64(n);
            m_messages++;
            if (info.flags & ECTP_MSG_GAP) {
                m_gaps++;
                report(QStringLiteral("data lost before message %1").arg(m_messages));
            }
            if (info.flags & ECTP_MSG_TRUNC) {
                m_truncated++;
                report(QStringLiteral("message %1 was longer than %2 bytes: truncated")
                           .arg(m_messages)
                           .arg(RecvBufLen));
            }
            if (!writeOut(m_buf.constData(), qsizetype(n))) {
                finish(1, false);
                return;
            }
            continue;
        }
        if (n == 0) {
            report(QStringLiteral("connection ended, received %1 bytes").arg(m_bytes));
            finish(0, true);
            return;
        }
        const int e = errno;
        if (e == EINTR)
            continue;
        if (e == EAGAIN || e == EWOULDBLOCK)
            break;
        report(QStringLiteral("mrecvmsg: %1; received %2 bytes").arg(errnoText(e)).arg(m_bytes));
        // ECONNRESET: ejected, or the TO is gone.
        finish(e == ECONNRESET ? 3 : 1, e == ECONNRESET);
        return;
    }
    // Hand what was read to a reader at the other end of a pipe (a player)
    // now, not when Qt's buffer fills.
    if (!m_finished && !m_out.flush()) {
        outputFailed();
        finish(1, false);
    }
}

bool Tu::writeOut(const char *data, qsizetype len)
{
    if (m_out.write(data, len) != len) {
        outputFailed();
        return false;
    }
    return true;
}

void Tu::outputFailed()
{
    m_outFailed = true;
    const QString name = m_config.output == QLatin1String("-") ? QStringLiteral("standard output")
                                                               : m_config.output;
    report(QStringLiteral("writing %1: %2").arg(name, m_out.errorString()));
}

void Tu::startTokenExchange()
{
    if (m_finished)
        return;
    report(QStringLiteral("asking for a token"));
    // Copies for the thread: it reads nothing of *this but m_tokenOutcome,
    // which only it writes and the main thread reads after it ended.
    m_tokenThread.reset(QThread::create([this, sd = m_sd, messages = m_config.tokenMessages] {
        const int id = mtoken_get(sd);
        if (id == -1) {
            const int e = errno;
            report(QStringLiteral("mtoken_get: %1").arg(errnoText(e)));
            m_tokenOutcome = e == EACCES ? TokenOutcome::Refused : TokenOutcome::Failed;
            return;
        }
        report(QStringLiteral("got token %1").arg(id));
        bool sentAll = true;
        for (const QByteArray &message : messages) {
            const ssize_t n = msendmsg(sd, message.constData(), size_t(message.size()), 0);
            if (n != ssize_t(message.size())) {
                const QString why = n == -1 ? errnoText(errno)
                                            : QStringLiteral("returned %1").arg(n);
                report(QStringLiteral("msendmsg(%1): %2").arg(quoted(message), why));
                sentAll = false;
                break;
            }
            report(QStringLiteral("sent %1").arg(quoted(message)));
        }
        if (mtoken_return(sd) == -1) {
            report(QStringLiteral("mtoken_return: %1").arg(errnoText(errno)));
            m_tokenOutcome = TokenOutcome::Failed;
            return;
        }
        report(QStringLiteral("returned token"));
        m_tokenOutcome = sentAll ? TokenOutcome::Done : TokenOutcome::Failed;
    }));
    // Emitted on the token thread, so queued to this (the main) thread.
    connect(m_tokenThread.get(), &QThread::finished, this, &Tu::tokenExchangeFinished);
    m_tokenThread->start();
}

void Tu::tokenExchangeFinished()
{
    if (m_finished)
        return; // finish() has already accounted for it
    if (m_tokenOutcome == TokenOutcome::Failed)
        report(QStringLiteral("the token exchange failed; still receiving"));
}

void Tu::finish(int code, bool ended)
{
    if (m_finished)
        return;
    m_finished = true;
    // A later failure turns a successful end into exit status 1.
    const auto failed = [&code] {
        if (code == 0)
            code = 1;
    };
    const bool tokenNotAskedYet = m_tokenTimer.isActive();
    m_tokenTimer.stop();
    m_exitTimer.stop();
    // Off before mleave closes the descriptor under it.
    m_notifier.reset();

    if (!m_outFailed && !m_out.flush()) {
        outputFailed();
        failed();
    }
    m_out.close();

    // Leave (ULR to the parent) and release the descriptor. After the end of
    // the connection the library may have nothing left to leave: fine.
    if (mleave(m_sd, 0) == -1) {
        const int e = errno;
        if (!ended || (e != ENOTCONN && e != ECONNRESET && e != EBADF)) {
            report(QStringLiteral("mleave: %1").arg(errnoText(e)));
            failed();
        }
    }
    m_sd = -1;

    report(QStringLiteral("%1 messages, %2 after a gap, %3 truncated")
               .arg(m_messages)
               .arg(m_gaps)
               .arg(m_truncated));

    if (tokenNotAskedYet)
        report(QStringLiteral("finished before the token was requested"));
    if (m_tokenThread) {
        // The end of the connection, or the mleave above, wakes a blocked
        // mtoken_get or mtoken_return: this is short.
        if (!m_tokenThread->wait(QDeadlineTimer(TokenThreadWaitMs))) {
            report(QStringLiteral("the token thread is still blocked; exiting without it"));
            // Destroying a running QThread aborts: leave it to the exit.
            (void)m_tokenThread.release();
            failed();
        } else if (m_tokenOutcome == TokenOutcome::Failed) {
            failed();
        }
    }
    emit finished(code);
}
