"""The hybrid mode's low-resolution video stream (after Gemino, NSDI 2024): the face crop at a
small size, coded by a conventional low-delay encoder, one picture per keypoint packet
(talkcodec.lowres.codec), fused on the receiver with the keypoint-driven render
(talkcodec.generator.fusion)."""
