"""English text for the synthetic OCR data (``cnnkit data synth text``): sentences written for cnnkit (its
licence), on the subjects text in photos and scans is about: shop signs and labels, forms and receipts,
instructions, notices, letters, travel, weather, science and everyday prose. Lines are cut from runs of
consecutive words, so the words come in the order and with the frequencies of real English."""

CORPUS = """
The morning train to the coast leaves from platform four at a quarter past eight.
Please keep your ticket until the end of the journey; inspectors may ask to see it.
Fresh bread is baked here every day before six, and the first loaves are usually gone by nine.
Open Monday to Friday from nine until half past five, Saturday from ten until four, closed on Sunday.
Store in a cool, dry place away from direct sunlight and out of the reach of children.
Shake well before use. Do not freeze. Once opened, keep refrigerated and use within three days.
The museum will be closed for repairs from the first of March until the end of April.
Visitors are asked to leave large bags and umbrellas at the desk near the main entrance.
Turn left at the second set of lights, then follow the signs for the hospital and the station.
No parking in front of the gate at any time. Vehicles left here will be removed at the owner's expense.
Thank you for shopping with us. Receipts are required for all returns and exchanges.
Total amount due, including tax, must be paid within thirty days of the date on this invoice.
Please write clearly in black ink and use capital letters for your name and address.
Date of birth, place of birth and the number of your passport or identity card.
Sign here to confirm that the information you have given is true and complete.
The results of the survey show that most people walk or cycle to work when the weather is good.
Temperatures will fall sharply overnight, with frost likely in sheltered valleys and a risk of fog.
Light rain in the north will spread south during the afternoon, clearing by the evening.
A strong wind from the west is expected to bring heavy showers to the hills on Tuesday.
The river rose quickly after the storm, and the old bridge was closed to traffic for two days.
She opened the window, listened to the rain on the roof and decided to stay at home with a book.
He had never seen so many stars as on that clear night far away from the lights of the city.
The children ran down to the water as soon as the car stopped, laughing and shouting at the gulls.
Our neighbours have planted apple trees along the fence, and in autumn they share the fruit with us.
Every cell in the body contains the same genetic information, yet each one uses only a part of it.
Light travels about three hundred thousand kilometres in a single second through empty space.
The experiment was repeated five times, and the average of the measurements is shown in the table.
Water boils at a lower temperature high in the mountains because the air pressure there is lower.
A camera turns light into numbers, and a neural network learns to turn those numbers into words.
The quick brown fox jumps over the lazy dog while the old cat watches from the garden wall.
Pack a warm jacket, sturdy shoes and enough water for the whole day before you set out on the trail.
The library lends books, films and music, and the reading room upstairs is quiet all afternoon.
Meeting postponed until next week because several members of the committee are travelling.
Dear customer, your order has been shipped and should arrive within three to five working days.
If you have any questions about your account, please call our office or send us a short letter.
We regret to inform you that the concert planned for Friday evening has been cancelled.
Tickets bought in advance will be refunded in full at the box office or by post.
Caution: wet floor. Mind the step. Staff only beyond this point. Emergency exit, keep clear.
Push the red button once to start the machine and hold it for three seconds to stop it.
Remove the cover, insert two new batteries and check that the small light turns green.
The kettle switches itself off when the water boils, so it is safe to leave it for a moment.
Add the flour slowly, stirring all the time, then pour in the milk and bake for forty minutes.
A cup of coffee and a slice of cake cost less here than anywhere else in the old town.
The market square fills with stalls selling cheese, flowers, fish and vegetables every Thursday.
Farmers in the valley grow wheat, barley and potatoes, and keep sheep on the higher ground.
The road over the pass is open in summer only, and snow can close it as early as October.
From the top of the tower you can see the harbour, the islands and, on a clear day, the mountains.
The ferry to the island sails twice a day in winter and every hour during the summer months.
Our hotel is a short walk from the beach, with a small pool, a garden and free parking for guests.
Breakfast is served in the dining room between seven and ten, and coffee is available all day.
Lost property may be collected from the office on the ground floor with proof of identity.
All students must register for the examination before the end of the month.
The lecture on modern history begins at ten in the main hall and lasts about an hour.
Write your answers in the spaces provided and hand in the paper at the end of the session.
Many hands make light work, and a problem shared is often a problem halved.
Reading a map is easier when you know which way is north and where you are standing.
The company reported higher sales in the first quarter, mostly from new customers abroad.
Prices have risen by four percent over the past year, faster than wages in most regions.
This product contains nuts and may also contain traces of milk, eggs and soy.
Best before the date shown on the lid. Keep away from heat and open flames.
For external use only. If symptoms persist, consult your doctor or pharmacist.
The doctor will see you now. Please bring your card and a list of the medicines you take.
Our team works from early in the morning until late at night to repair the damaged lines.
Power will be switched off between midnight and four while engineers replace the cables.
A new school, a health centre and a sports field will be built on the site of the old factory.
The council has agreed to plant more trees along the main road and to widen the footpaths.
Bicycles may be left in the racks behind the station, but not chained to the railings.
The small boat drifted slowly towards the shore as the sun went down behind the hills.
Somewhere in the house a clock struck eleven, and the last guests began to say goodbye.
Good design is as little design as possible, and good writing says one thing at a time.
Measure twice and cut once, and always keep your tools clean, sharp and in their place.
"""
