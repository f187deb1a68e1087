"""The call's sound: sources (microphone, a file's soundtrack, the demo's synthesised voice),
Opus packets on a standard WebRTC audio track, and the receiver's lip-synchronised playout.

Audio and keypoints share one media clock: the sender's wall clock in milliseconds, the clock
of every packet's pts_ms. An audio packet's time is the clock time of its first sample; the
control message AUDIO_CLOCK tells the receiver which clock time the RTP stream's first sample
has, and the receiver schedules both streams against that clock.
"""
